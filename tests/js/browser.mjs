// Drives Debian's Chromium through the real page (tests/browser.rs). One JSON argument:
// {url, password, editor, peer, outsider, calm, strobe, shots}. Every page error and console
// error (a CSP violation included) is reported and fails the run.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { chromium } from "playwright-core";
import { playAndSeek } from "./player.mjs";

const config = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const problems = [];
const report = {};

async function open(who, device = { viewport: { width: 1100, height: 700 } }) {
  const context = await browser.newContext(device);
  const page = await context.newPage();
  page.on("pageerror", (error) => problems.push(`${who}: page error: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && problems.push(`${who}: console: ${message.text()}`));
  page.sockets = 0;
  page.on("websocket", () => page.sockets++);
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

/** Drops files on the library as a desktop's file manager would. */
async function dropFiles(page, paths) {
  const files = paths.map((path) => ({ name: basename(path), data: [...readFileSync(path)] }));
  const dataTransfer = await page.evaluateHandle((files) => {
    const transfer = new DataTransfer();
    for (const { name, data } of files) {
      const type = name.endsWith(".mp4") ? "video/mp4" : "text/plain";
      transfer.items.add(new File([new Uint8Array(data)], name, { type }));
    }
    return transfer;
  }, files);
  await page.dispatchEvent("#library-view", "dragover", { dataTransfer });
  await page.dispatchEvent("#library-view", "drop", { dataTransfer });
}

/** Whether the page fits the screen's width (nothing to scroll sideways). */
async function fitsWidth(page) {
  return page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
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

  // Upload (picked and dropped files), watch processing, play through range requests.
  await editor.setInputFiles("#file-input", [config.calm]);
  await dropFiles(editor, [config.strobe, config.notes]);
  // A file that is not a video gets a clear refusal on its own card.
  await editor.waitForSelector(".card.status-failed:has-text('notes.txt')");
  report.refusal = await editor.textContent(".card.status-failed:has-text('notes.txt') .error");
  for (let i = problems.length - 1; i >= 0; i--) if (problems[i].startsWith("editor: console:") && problems[i].includes("415")) problems.splice(i, 1);
  await editor.waitForFunction(() => document.querySelectorAll(".card.status-processed img.thumb").length === 2, null, { timeout: 90000 });
  // The cards show before their images have finished loading: give them a moment.
  report.thumbnailsLoaded = await editor
    .waitForFunction(
      () => [...document.querySelectorAll(".card.status-processed img.thumb")].every((img) => img.complete && img.naturalWidth > 0),
      null,
      { timeout: 10000 },
    )
    .then(() => true, () => false);
  await editor.screenshot({ path: `${config.shots}/library.png` });
  // Keyboard only: focus the card, Enter opens the player, Escape comes back to the card.
  await editor.focus("button[aria-label='Play beach']");
  await editor.keyboard.press("Enter");
  report.calmDuration = await playable(editor);
  report.calmVerdict = await editor.textContent("#player-details");
  report.calmPlayback = await playAndSeek(editor, 2);
  await editor.screenshot({ path: `${config.shots}/player.png` });
  await editor.keyboard.press("Escape");
  await editor.waitForSelector("#library-view:not([hidden])");
  report.focusBack = await editor.evaluate(() => document.activeElement?.getAttribute("aria-label"));

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

  // The device panel: the box's state, and identify makes the LED say so.
  await outsider.click("#nav-device");
  await outsider.waitForSelector("#led-state");
  report.deviceVersion = await outsider.textContent("#device-details dd");
  await outsider.click("#identify");
  await outsider.waitForSelector("#led-state[data-state='identify']");
  await outsider.screenshot({ path: `${config.shots}/device.png` });

  // A phone: log in with the keyboard alone, and every screen fits the width.
  const phone = await open("phone", { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await phone.focus("input[name=email]");
  await phone.keyboard.type(config.peer);
  await phone.keyboard.press("Tab");
  await phone.keyboard.type(config.password);
  await phone.keyboard.press("Enter");
  await phone.waitForSelector("#connection.connected");
  await phone.waitForSelector(".card.status-processed >> nth=1");
  await phone.waitForFunction(() => [...document.querySelectorAll(".card img.thumb")].every((img) => img.complete && img.naturalWidth > 0));
  report.phoneFits = { library: await fitsWidth(phone) };
  await phone.screenshot({ path: `${config.shots}/phone-library.png`, fullPage: true });
  await phone.tap("button[aria-label='Play beach']");
  await playable(phone);
  report.phoneFits.player = await fitsWidth(phone);
  await phone.screenshot({ path: `${config.shots}/phone-player.png` });

  // Access tokens live 15 s here: the server closed the editor's socket when its token
  // expired, and the page reconnected with a renewed one and still chats.
  const deadline = Date.now() + 30000;
  while (editor.sockets < 2 && Date.now() < deadline) await editor.waitForTimeout(250);
  await editor.waitForSelector("#connection.connected");
  report.editorSockets = editor.sockets;
  await editor.fill("#chat-text", "still here after the token expired");
  await editor.press("#chat-text", "Enter");
  await peer.waitForSelector("#messages li:has-text('still here after the token expired')");

  // A new box: the first visitor enters the setup code and becomes its first admin.
  {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`setup: page error: ${error.message}`));
    page.on("console", (message) => message.type() === "error" && !message.text().includes("401") && !message.text().includes("403") && problems.push(`setup: console: ${message.text()}`));
    await page.goto(config.setupUrl);
    await page.waitForSelector("#setup-view:not([hidden])");
    await page.fill("#setup-form input[name=code]", "WRONG-CODE-0000");
    await page.fill("#setup-form input[name=organization]", "Initech");
    await page.fill("#setup-form input[name=email]", "first@initech.test");
    await page.fill("#setup-form input[name=password]", config.password);
    await page.click("#setup-form button[type=submit]");
    await page.waitForSelector("#setup-error:text('setup code')");
    await page.screenshot({ path: `${config.shots}/setup.png` });
    await page.fill("#setup-form input[name=code]", config.setupCode.toLowerCase());
    await page.click("#setup-form button[type=submit]");
    await page.waitForSelector("#library-view:not([hidden])");
    await page.waitForSelector("#connection.connected");
    report.setupWho = await page.textContent("#who");
    report.setupAdmin = await page.isVisible("#nav-users");
    await context.close();
  }

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
