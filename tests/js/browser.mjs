// Drives Debian's Chromium through the real page (tests/browser.rs): log in, upload, watch the
// card go through processing to a thumbnail, reload with the refresh cookie, screenshot.
// Every page error and console error (a CSP violation included) fails the run.
import { chromium } from "playwright-core";

const [url, email, password, video, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
  await page.goto(url);
  await page.waitForSelector("#login-view:not([hidden])");
  await page.fill("input[name=password]", "wrong password");
  await page.fill("input[name=email]", email);
  await page.click("button[type=submit]");
  await page.waitForSelector("#login-error:text('wrong email or password')");
  problems.length = 0; // the 401 of that failed login is expected
  await page.fill("input[name=password]", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("#library-view:not([hidden])");
  await page.waitForSelector("#connection.connected");
  await page.waitForSelector("#empty:not([hidden])");
  await page.screenshot({ path: `${shots}/empty-library.png` });
  await page.setInputFiles("#file-input", video);
  await page.waitForSelector(".card.status-processed img.thumb", { timeout: 60000 });
  const loaded = await page.$eval(".card.status-processed img.thumb", (img) => img.complete && img.naturalWidth);
  const title = await page.textContent(".card.status-processed h3");
  await page.screenshot({ path: `${shots}/library.png` });
  await page.reload();
  await page.waitForSelector(".card.status-processed img.thumb");
  console.log(JSON.stringify({ thumbnailWidth: loaded, title, problems }));
} finally {
  await browser.close();
}
