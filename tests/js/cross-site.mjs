// Pages of another site against the box, in Debian's Chromium (tests/security.rs). One JSON
// argument: {box, newBox, newBoxCode, password, victim, attacker}. The attacker's pages are served here
// on localhost while the box is at 127.0.0.1: another site, as far as the browser knows.
// Prints a JSON report as its last line.
import http from "node:http";
import { chromium } from "playwright-core";

const config = JSON.parse(process.argv[2]);

/** An HTML form that posts itself as text/plain; `name=value` is the JSON a text/plain body can carry. */
function selfPostingForm(action, name, value) {
  return `<!doctype html><form method="POST" enctype="text/plain" action="${action}"><input name='${name}' value='${value}'></form><script>document.forms[0].submit()</script>`;
}

const socketUrl = config.box.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket";
const pages = {
  "/login": selfPostingForm(`${config.box}/api/auth/login`, `{"email":"${config.attacker}","password":"${config.password}","x":"`, `"}`),
  "/logout": selfPostingForm(`${config.box}/api/auth/logout`, "x", "y"),
  "/refresh": selfPostingForm(`${config.box}/api/auth/refresh`, "x", "y"),
  "/setup": selfPostingForm(
    `${config.newBox}/api/setup`,
    `{"code":"${config.newBoxCode}","organization":"Evil","email":"evil@evil.test","password":"${config.password}","x":"`,
    `"}`,
  ),
  "/socket": `<!doctype html><title>waiting</title><script>
    const ws = new WebSocket(${JSON.stringify(socketUrl)});
    ws.onmessage = () => { document.title = "open"; };
    ws.onerror = () => { document.title = "refused"; };
    ws.onclose = () => { if (document.title === "waiting") document.title = "refused"; };
  </script>`,
};
const attacker = http.createServer((request, response) => {
  const page = pages[request.url];
  response.writeHead(page ? 200 : 404, { "content-type": "text/html" });
  response.end(page ?? "");
});
await new Promise((resolve) => attacker.listen(0, "127.0.0.1", resolve));
const evil = `http://localhost:${attacker.address().port}`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const report = {};
const context = await browser.newContext();

/** What the box's page shows once it has settled: who is logged in, or "login". */
async function who(page) {
  await page.waitForSelector("#library-view:not([hidden]), #login-view:not([hidden])", { timeout: 15000 });
  return (await page.$("#library-view:not([hidden])")) ? page.textContent("#who") : "login";
}

async function visit(url) {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForLoadState("load");
  return page;
}

try {
  const victim = await context.newPage();
  await victim.goto(`${config.box}/`);
  await victim.waitForSelector("#login-view:not([hidden])");
  await victim.fill("input[name=email]", config.victim);
  await victim.fill("input[name=password]", config.password);
  await victim.click("#login-form button[type=submit]");
  await victim.waitForSelector("#library-view:not([hidden])");
  report.before = await who(victim);

  // The attacker's form logs in as the attacker; the victim's next page must not be theirs.
  let page = await visit(`${evil}/login`);
  await page.waitForURL(`${config.box}/**`).catch(() => {});
  await page.close();
  await victim.reload();
  report.afterLoginForm = await who(victim);

  page = await visit(`${evil}/logout`);
  await page.waitForURL(`${config.box}/**`).catch(() => {});
  await page.close();
  await victim.reload();
  report.afterLogoutForm = await who(victim);

  page = await visit(`${evil}/refresh`);
  await page.waitForURL(`${config.box}/**`).catch(() => {});
  await page.close();
  await victim.reload();
  report.afterRefreshForm = await who(victim);

  page = await visit(`${evil}/socket`);
  await page.waitForFunction(() => document.title !== "waiting", null, { timeout: 10000 }).catch(() => {});
  report.crossSiteSocket = await page.title();
  await page.close();

  page = await visit(`${evil}/setup`);
  await page.waitForURL(`${config.newBox}/**`).catch(() => {});
  await page.close();
  report.setupStillNeeded = (await (await fetch(`${config.newBox}/api/setup`)).json()).needed;

  // Two tabs opened at the same moment each renew the session with the same cookie. Over
  // plain HTTP on a LAN the page is no secure context and has no Web Locks to queue them:
  // the server's grace window alone must keep the session.
  await context.addInitScript(() => Object.defineProperty(Navigator.prototype, "locks", { get: () => undefined }));
  const tabs = [await context.newPage(), await context.newPage()];
  await Promise.all(tabs.map((tab) => tab.goto(`${config.box}/`)));
  report.twoTabs = await Promise.all(tabs.map(who));
  const third = await context.newPage();
  await third.goto(`${config.box}/`);
  report.afterTwoTabs = await who(third);
} catch (error) {
  report.error = String(error);
} finally {
  await browser.close();
  attacker.close();
}
console.log(JSON.stringify(report));
