// The operations console in a real browser: headless Debian chromium driven by playwright-core
// (no browser download). Run by tests/tests/console_browser.rs, which starts the whole stack on
// free ports, seeds members through the command API and passes what it knows in env vars:
//   CONSOLE_URL           the query API, e.g. http://127.0.0.1:41234
//   CONSOLE_ADMIN_KEY     a key with scope admin; CONSOLE_ORDER_KEY: a read key (class order)
//   CONSOLE_MEMBER_ID, CONSOLE_MEMBER_MOBILE, CONSOLE_REQUEST_ID: a seeded member, its mobile
//                         (+86...) and the request id its registration was sent with
//   CONSOLE_DRIFTED_MEMBER_ID  a member deleted from MySQL behind its projector's back
//   CONSOLE_SCREENSHOTS   where to write a PNG of each view
//   CHROMIUM              the browser (default /usr/bin/chromium)
// Steps run in order in one browser: each depends on the stack the previous one left.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run through tests/tests/console_browser.rs)`);
  return value;
};
const URL = env("CONSOLE_URL");
const ADMIN_KEY = env("CONSOLE_ADMIN_KEY");
const ORDER_KEY = env("CONSOLE_ORDER_KEY");
const MEMBER_ID = env("CONSOLE_MEMBER_ID");
const MOBILE = env("CONSOLE_MEMBER_MOBILE");
const REQUEST_ID = env("CONSOLE_REQUEST_ID");
const DRIFTED_ID = env("CONSOLE_DRIFTED_MEMBER_ID");
const SHOTS = env("CONSOLE_SCREENSHOTS");
mkdirSync(SHOTS, { recursive: true });

let browser;
let page;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // The test may run as root in a container, where chromium's sandbox cannot start.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
});

after(async () => {
  await browser?.close();
});

const shot = (name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

/// A read through the query API as an order-class caller: which backend served it.
async function servedFrom() {
  const response = await fetch(`${URL}/v1/members/${MEMBER_ID}`, {
    headers: { authorization: `Bearer ${ORDER_KEY}` },
  });
  assert.equal(response.status, 200, "an order read of the seeded member succeeds");
  return response.headers.get("x-served-from");
}

test("without a session every view sends the browser to the sign-in form", async () => {
  for (const path of ["/console/members", "/console/routing", "/console/jobs", "/console/governance"]) {
    await page.goto(URL + path);
    assert.equal(new globalThis.URL(page.url()).pathname, "/console", path);
    await page.locator("input[type=password]").waitFor();
  }
  // A state change without a session changes nothing.
  const refused = await page.request.post(`${URL}/console/routing`, {
    form: { action: "fault", backend: "redis-a", down: "true", confirm: "yes", csrf: "x" },
    maxRedirects: 0,
  });
  assert.equal(refused.status(), 303);
  assert.equal(await servedFrom(), "redis-a", "no fault was injected");
});

test("a wrong key and a key without scope admin are refused", async () => {
  await page.goto(`${URL}/console`);
  await page.fill("input[type=password]", "not-a-key-at-all");
  await page.click("#sign-in button[type=submit]");
  await page.locator("#refused").waitFor();
  assert.match(await page.textContent("#refused"), /not known/);
  await page.fill("input[type=password]", ORDER_KEY);
  await page.click("#sign-in button[type=submit]");
  assert.match(await page.textContent("#refused"), /scope admin/);
  assert.equal((await page.context().cookies()).length, 0, "no session cookie");
  await shot("sign-in");
});

test("the admin key opens a session: HttpOnly, SameSite=Strict cookie; the pipeline shows the stack", async () => {
  await page.goto(`${URL}/console`);
  await page.fill("input[type=password]", ADMIN_KEY);
  await page.click("#sign-in button[type=submit]");
  await page.locator("#projections").waitFor();
  const [cookie] = await page.context().cookies();
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.ok(!(await page.content()).includes(ADMIN_KEY), "the key is not echoed");
  const rows = page.locator("#projections tbody tr");
  assert.equal(await rows.count(), 6);
  // The event store holds the seeded members; the relay has published them.
  assert.ok(Number(await page.textContent("#head")) > 0, "event store head");
  // The page refreshes itself: the sampler's lag and the groups' members arrive without a reload.
  await page.waitForFunction(
    () => [...document.querySelectorAll("#projections tbody tr")].every((row) => {
      const cells = row.querySelectorAll("td");
      return /^\d+$/.test(cells[1].textContent) && /@/.test(cells[5].textContent);
    }),
    null,
    { timeout: 60_000 },
  );
  assert.equal(await page.textContent("#relay-lag"), "0");
  for (const target of ["mysql", "redis-a", "redis-b", "search-primary", "search-backup", "search-marketing"]) {
    const row = page.locator(`#projections tr[data-target="${target}"]`);
    assert.equal(await row.locator("td").nth(3).textContent(), "available", target);
    assert.equal(await row.locator("td").nth(4).textContent(), "closed", target);
  }
  // A flat line (no lag) has no height, so "attached", not "visible".
  await page.locator("#lag-chart svg polyline").first().waitFor({ state: "attached" });
  await page.locator("#served-order").waitFor();
  await shot("pipeline");
});

test("members: search by kind:value, mobiles masked, history with caller and request id", async () => {
  await page.click("nav a[href='/console/members']");
  await page.fill("input[name=q]", `mobile:${MOBILE}`);
  await page.press("input[name=q]", "Enter");
  await page.locator("#document").waitFor();
  assert.equal(await page.getAttribute("#member", "data-member-id"), MEMBER_ID);
  const masked = `${MOBILE.slice(0, 6)}****${MOBILE.slice(10)}`;
  const mobileCell = page.locator("#document td.identity[data-kind=mobile]");
  assert.equal(await mobileCell.textContent(), masked);
  assert.ok(!(await page.locator("main").innerText()).includes(MOBILE.slice(3)), "no clear mobile anywhere before reveal");
  const history = page.locator("#history tbody tr");
  assert.ok((await history.count()) >= 2);
  assert.equal(await history.first().locator("td.caller").textContent(), "local-writer");
  assert.equal(await history.first().locator("td.request-id").textContent(), REQUEST_ID);
  // Every store holds the member as the event store does (Redis may just not have it cached).
  const findings = await page.locator("#stores td[data-finding]").evaluateAll(
    (cells) => cells.map((c) => c.dataset.finding),
  );
  assert.equal(findings.length, 6);
  for (const f of findings) assert.ok(["equal", "not-cached"].includes(f), findings.join(","));
  // A member id works too.
  await page.fill("input[name=q]", MEMBER_ID);
  await page.press("input[name=q]", "Enter");
  await page.locator("#document").waitFor();
  assert.equal(await mobileCell.textContent(), masked);
  await shot("members");
});

test("reveal shows the mobile and is audited: who, whose data, when", async () => {
  assert.equal(await page.locator("#reveals").textContent(), "None recorded by this process.");
  await page.click("#reveal");
  await page.locator("#revealed").waitFor();
  assert.equal(await page.locator("#document td.identity[data-kind=mobile]").textContent(), MOBILE);
  const reveal = page.locator("#reveals tbody tr").first();
  assert.equal(await reveal.locator("td.revealer").textContent(), "local-admin");
  const when = Date.parse(await reveal.locator("td").nth(1).textContent());
  assert.ok(Math.abs(Date.now() - when) < 120_000, "recorded now");
  assert.equal(await page.getAttribute("#member", "data-member-id"), MEMBER_ID);
  await shot("members-revealed");
});

test("routing: a fault injected from the console (after confirming) moves reads; cleared, they come back", async () => {
  assert.equal(await servedFrom(), "redis-a", "the local center serves before the fault");
  await page.click("nav a[href='/console/routing']");
  await page.click("#fault-redis-a");
  // The confirmation step: nothing changed yet.
  await page.locator("#confirm").waitFor();
  assert.equal(await servedFrom(), "redis-a", "nothing changes before the confirmation");
  await shot("routing-confirm");
  await page.click("#confirm-button");
  await page.locator("#clear-redis-a").waitFor();
  assert.equal(await page.textContent("#backends tr[data-backend=redis-a] td:nth-child(2)"), "faulted");
  const moved = await servedFrom();
  assert.notEqual(moved, "redis-a");
  assert.ok(["redis-b", "search-primary", "search-backup", "mysql", "near-cache", "last-served"].includes(moved), moved);
  await shot("routing");
  // A forged change (no form token) is refused and changes nothing.
  const forged = await page.request.post(`${URL}/console/routing`, {
    form: { action: "fault", backend: "redis-a", down: "false", confirm: "yes", csrf: "forged" },
    maxRedirects: 0,
  });
  assert.equal(forged.status(), 403);
  assert.equal(await page.locator("#clear-redis-a").count(), 1);
  await page.click("#clear-redis-a");
  await page.click("#confirm-button");
  await page.locator("#fault-redis-a").waitFor();
  // A pin: the order class reads MySQL first, until the pin is released.
  await page.selectOption("#pin-order-backend", "mysql");
  await page.click("#pin-order");
  await page.locator("#confirm").waitFor();
  await page.click("#confirm-button");
  await page.locator("#release-order").waitFor();
  assert.match(await page.textContent("#chains tr[data-class=order] td.chain"), /^mysql/);
  assert.equal(await servedFrom(), "mysql");
  await page.click("#release-order");
  await page.click("#confirm-button");
  await page.locator("#pin-order").waitFor();
  assert.equal(await page.locator("#release-order").count(), 0);
  // The breaker may need its projection to catch up once more: wait for reads to come back.
  const deadline = Date.now() + 30_000;
  let from;
  while ((from = await servedFrom()) !== "redis-a" && Date.now() < deadline) {
    await page.waitForTimeout(200);
  }
  assert.equal(from, "redis-a", "reads come back to the local center");
});

const mysqlFinding = () =>
  page.getAttribute("#stores tr[data-store=mysql] td[data-finding]", "data-finding");

test("members: a store that lost a member shows verify's difference, highlighted", async () => {
  await page.goto(`${URL}/console/members?q=${DRIFTED_ID}`);
  assert.equal(await mysqlFinding(), "missing");
  assert.equal(await page.locator("#stores tr[data-store=mysql] td.diff").count() > 0, true);
  assert.equal(await page.getAttribute("#stores tr[data-store=search-primary] td[data-finding]", "data-finding"), "equal");
  await shot("members-drift");
});

test("jobs: a rebuild started from the console runs in the server to completion and stays listed", async () => {
  await page.click("nav a[href='/console/jobs']");
  await page.selectOption("#job-kind", "rebuild");
  await page.selectOption("#job-target", "mysql");
  await page.click("#start");
  assert.equal(await page.locator("#job-list tbody tr").first().getAttribute("data-kind"), "rebuild");
  // The job runs in the server: closing the page does not stop it.
  const context = page.context();
  await page.close();
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  await page.goto(`${URL}/console/jobs`);
  const job = page.locator("#job-list tbody tr").first();
  assert.equal(await job.getAttribute("data-target"), "mysql");
  assert.equal(await job.getAttribute("data-kind"), "rebuild");
  // The list refreshes by itself until the job is done.
  await page.waitForFunction(
    () => document.querySelector("#job-list tbody tr")?.dataset.state !== "running",
    null,
    { timeout: 180_000 },
  );
  assert.equal(await job.getAttribute("data-state"), "succeeded", await job.innerText());
  assert.match(await job.innerText(), /rebuilt mysql from \d+ members/);
  // The rebuild brought the lost member back; the others are still there.
  await page.goto(`${URL}/console/members?q=${DRIFTED_ID}`);
  assert.equal(await mysqlFinding(), "equal");
  await page.goto(`${URL}/console/members?q=${MEMBER_ID}`);
  assert.equal(await mysqlFinding(), "equal");
  // A verify of the rebuilt store finds nothing; past jobs stay listed.
  await page.goto(`${URL}/console/jobs`);
  await page.selectOption("#job-kind", "verify");
  await page.selectOption("#job-target", "mysql");
  await page.click("#start");
  await page.waitForFunction(
    () => document.querySelector("#job-list tbody tr")?.dataset.state !== "running",
    null,
    { timeout: 180_000 },
  );
  assert.equal(await page.locator("#job-list tbody tr").count(), 2);
  const verify = page.locator("#job-list tbody tr").first();
  assert.equal(await verify.getAttribute("data-state"), "succeeded", await verify.innerText());
  assert.match(await verify.innerText(), /no differences/);
  await shot("jobs");
});

test("governance: the scan's finding, repaired after a confirmation, is gone", async () => {
  await page.click("nav a[href='/console/governance']");
  const finding = page.locator("#findings tbody tr").first();
  assert.equal(await page.locator("#findings tbody tr").count(), 1);
  assert.match(await finding.innerText(), /unresolvable/);
  await shot("governance");
  await finding.locator("select[name=resolution]").selectOption("dismiss");
  await finding.locator("input[name=note]").fill("OPS-1: test data");
  await finding.locator("button[type=submit]").click();
  await page.locator("#confirm").waitFor();
  assert.match(await page.textContent("#confirm .what"), /dismiss.*local-admin/s);
  await page.click("#confirm-button");
  await page.locator("#repaired").waitFor();
  await page.click("nav a[href='/console/governance']");
  await page.locator("#no-findings").waitFor();
});

test("sign-out ends the session", async () => {
  await page.click("#sign-out");
  await page.locator("input[type=password]").waitFor();
  await page.goto(`${URL}/console/members`);
  assert.equal(new globalThis.URL(page.url()).pathname, "/console");
  await page.locator("input[type=password]").waitFor();
});
