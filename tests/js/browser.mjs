// Drives Debian's Chromium through the real page (tests/browser.rs). One JSON argument:
// {url, password, editor, peer, outsider, calm, strobe, shots}. Every page error and console
// error (a CSP violation included) is reported and fails the run.
import { chromium } from "playwright-core";

const config = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const problems = [];
const report = {};

async function open(who) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => problems.push(`${who}: page error: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && problems.push(`${who}: console: ${message.text()}`));
  await page.goto(config.url);
  await page.waitForSelector("#login-view:not([hidden])");
  // A fresh browser has no session: the page's refresh attempt is answered 401, as it should.
  for (let i = problems.length - 1; i >= 0; i--) {
    if (problems[i].startsWith(`${who}: console:`) && problems[i].includes("401")) problems.splice(i, 1);
  }
  return page;
}

async function logIn(page, email) {
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", config.password);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#library-view:not([hidden])");
  await page.waitForSelector("#connection.connected");
}

/** Waits until the player's video has loaded its metadata; returns its duration. */
async function playable(page) {
  return page.$eval("#player-video", (video) =>
    video.readyState >= 1
      ? video.duration
      : new Promise((resolve, reject) => {
          video.addEventListener("loadedmetadata", () => resolve(video.duration), { once: true });
          video.addEventListener("error", () => reject(new Error(`video error ${video.error?.code}`)), { once: true });
        }),
  );
}

try {
  const editor = await open("editor");
  await editor.fill("input[name=password]", "wrong password");
  await editor.fill("input[name=email]", config.editor);
  await editor.click("#login-form button[type=submit]");
  await editor.waitForSelector("#login-error:text('wrong email or password')");
  // The 401 of that failed login is expected too.
  for (let i = problems.length - 1; i >= 0; i--) if (problems[i].includes("401")) problems.splice(i, 1);
  await logIn(editor, config.editor);
  await editor.waitForSelector("#empty:not([hidden])");
  await editor.screenshot({ path: `${config.shots}/empty-library.png` });

  // Upload, watch processing, play through range requests.
  await editor.setInputFiles("#file-input", [config.calm, config.strobe]);
  await editor.waitForFunction(() => document.querySelectorAll(".card.status-processed img.thumb").length === 2, null, { timeout: 90000 });
  report.thumbnailsLoaded = await editor.$$eval(".card.status-processed img.thumb", (imgs) => imgs.every((img) => img.complete && img.naturalWidth > 0));
  await editor.screenshot({ path: `${config.shots}/library.png` });
  await editor.click("button[aria-label='Play beach']");
  report.calmDuration = await playable(editor);
  report.calmVerdict = await editor.textContent("#player-details");
  await editor.screenshot({ path: `${config.shots}/player.png` });
  await editor.click("#player-close");

  // A flagged video warns first and has no source until the viewer acknowledges.
  await editor.click("button[aria-label='Play strobe']");
  await editor.waitForSelector("#player-warning:not([hidden])");
  report.sourceBeforeAcknowledging = await editor.$eval("#player-video", (video) => video.getAttribute("src"));
  await editor.screenshot({ path: `${config.shots}/warning.png` });
  await editor.click("#player-acknowledge");
  report.strobeDuration = await playable(editor);
  await editor.click("#player-close");

  // Chat between two users of one organization; a third organization sees nothing.
  const peer = await open("peer");
  await logIn(peer, config.peer);
  const outsider = await open("outsider");
  await logIn(outsider, config.outsider);
  await editor.fill("#chat-text", "hello from the editor");
  await editor.press("#chat-text", "Enter");
  await peer.waitForSelector("#messages li:has-text('hello from the editor')");
  await peer.fill("#chat-text", "hello back");
  await peer.click("#chat-form button");
  await editor.waitForSelector("#messages li:has-text('hello back')");
  await editor.screenshot({ path: `${config.shots}/chat.png` });
  await outsider.waitForTimeout(500);
  report.outsiderMessages = await outsider.$$eval("#messages li", (items) => items.length);
  report.outsiderVideos = await outsider.$$eval(".card", (items) => items.length);

  // Only admins see the users screen; an admin adds, promotes and removes a user.
  report.editorSeesUsers = await editor.isVisible("#nav-users");
  await outsider.click("#nav-users");
  await outsider.waitForSelector("#user-rows tr[data-email='outsider@globex.test']");
  await outsider.fill("#user-form input[name=email]", "new@globex.test");
  await outsider.fill("#user-form input[name=password]", "short");
  await outsider.click("#user-form button[type=submit]");
  report.shortPasswordRefused = (await outsider.$$("#user-rows tr[data-email='new@globex.test']")).length === 0;
  await outsider.fill("#user-form input[name=password]", "a long enough password");
  await outsider.selectOption("#user-form select[name=role]", "editor");
  await outsider.click("#user-form button[type=submit]");
  await outsider.waitForSelector("#user-rows tr[data-email='new@globex.test']");
  report.newUserRole = await outsider.$eval("#user-rows tr[data-email='new@globex.test'] select", (s) => s.value);
  await outsider.screenshot({ path: `${config.shots}/users.png` });
  await outsider.click("button[aria-label='Remove new@globex.test']");
  await outsider.waitForSelector("#user-rows tr[data-email='new@globex.test']", { state: "detached" });
  // Demoting the last admin is refused, with the server's explanation.
  await outsider.selectOption("select[aria-label='Role of outsider@globex.test']", "viewer");
  await outsider.waitForSelector("#users-error:text('at least one admin')");
  // That refusal's 409 is the expected answer.
  for (let i = problems.length - 1; i >= 0; i--) if (problems[i].startsWith("outsider: console:") && problems[i].includes("409")) problems.splice(i, 1);
  report.usersListed = await outsider.$$eval("#user-rows tr", (rows) => rows.map((r) => r.dataset.email));

  // A reload keeps the session (refresh cookie) and the chat history.
  await peer.reload();
  await peer.waitForSelector("#library-view:not([hidden])");
  await peer.waitForSelector("#messages li:has-text('hello back')");
  report.peerCards = await peer.$$eval(".card.status-processed", (items) => items.length);
  report.problems = problems;
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
