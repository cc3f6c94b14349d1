// An HEVC phone video in Debian's Chromium (tests/browser.rs): the browser cannot play the
// original, the player plays the web rendition (time advances, a seek lands) and offers the
// original as a download. One JSON argument: {url, password, editor, hevc}. Prints a JSON
// report as its last line.
import { chromium } from "playwright-core";
import { playAndSeek } from "./player.mjs";

const config = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const report = { problems: [] };
try {
  const page = await (await browser.newContext({ viewport: { width: 1100, height: 700 } })).newPage();
  page.on("pageerror", (error) => report.problems.push(`page error: ${error.message}`));
  await page.goto(config.url);
  await page.fill("input[name=email]", config.editor);
  await page.fill("input[name=password]", config.password);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#connection.connected");
  report.canPlayHevc = await page.evaluate(() => document.createElement("video").canPlayType('video/mp4; codecs="hvc1.1.6.L93.B0"'));
  await page.setInputFiles("#file-input", [config.hevc]);
  // While the rendition is made the card says so.
  const preparing = page
    .waitForSelector(".card:has-text('preparing for playback')", { timeout: 60000 })
    .then(() => true, () => false);
  await page.waitForSelector(".card.status-processed img.thumb", { timeout: 90000 });
  report.sawPreparing = await preparing;
  await page.click(".card.status-processed button.open");
  await page.waitForSelector("#player-view:not([hidden])");
  report.download = await page.$eval("#player-download", (a) => ({ hidden: a.hidden, href: a.getAttribute("href") }));
  // The original, straight into a video element: Chromium cannot show its picture.
  report.original = await page.$eval("#player-download", (a) =>
    new Promise((resolve) => {
      const video = document.createElement("video");
      video.muted = true;
      const done = (event) => resolve({ event, error: video.error?.code ?? null, videoWidth: video.videoWidth });
      video.addEventListener("error", () => done("error"), { once: true });
      video.addEventListener("loadeddata", () => done("loadeddata"), { once: true });
      setTimeout(() => done("timeout"), 10000);
      video.src = a.href;
    }),
  );
  report.playback = await playAndSeek(page, 2);
  report.details = await page.textContent("#player-details");
  // Hovering the seek bar shows the frame under the pointer, from the previews' sheet.
  await page.waitForSelector("#player-scrub:not([hidden])");
  const bar = await page.$("#player-seek");
  await bar.scrollIntoViewIfNeeded();
  const box = await bar.boundingBox();
  await page.mouse.move(box.x + box.width * 0.75, box.y + box.height / 2);
  await page.waitForSelector("#player-preview:not([hidden])");
  report.preview = await page.$eval("#player-preview", (preview) => {
    const style = getComputedStyle(preview);
    return { image: style.backgroundImage, width: preview.offsetWidth, time: preview.textContent };
  });
  report.sheetLoads = await page.evaluate(async () => {
    const url = getComputedStyle(document.getElementById("player-preview")).backgroundImage.slice(5, -2);
    const image = new Image();
    image.src = url;
    await image.decode();
    return image.naturalWidth > 0;
  });
  await page.mouse.move(box.x + box.width / 2, box.y - 100);
  report.previewHiddenAfter = await page.$eval("#player-preview", (preview) => preview.hidden);
  // A finger dragging along the bar: Chromium's own touch input, through the DevTools protocol.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Emulation.setTouchEmulationEnabled", { enabled: true, maxTouchPoints: 1 });
  const y = box.y + box.height / 2;
  await cdp.send("Input.dispatchTouchEvent", { type: "touchStart", touchPoints: [{ x: box.x + box.width * 0.2, y }] });
  await cdp.send("Input.dispatchTouchEvent", { type: "touchMove", touchPoints: [{ x: box.x + box.width * 0.4, y }] });
  await cdp.send("Input.dispatchTouchEvent", { type: "touchMove", touchPoints: [{ x: box.x + box.width * 0.5, y }] });
  report.touch = await page.$eval("#player-preview", (preview) => ({ shown: !preview.hidden, time: preview.textContent }));
  await cdp.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
  report.touch.hiddenAfter = await page.$eval("#player-preview", (preview) => preview.hidden);
  report.touch.seekedTo = await page.$eval("#player-video", (video) => video.currentTime);
} catch (error) {
  report.problems.push(`run: ${error.message}`);
}
await browser.close();
console.log(JSON.stringify(report));
