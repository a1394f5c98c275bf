// The console's only script: refreshes the parts of a page that name a fragment URL in
// data-refresh (every data-every milliseconds). Pages work without it (forms are plain HTML);
// it only keeps the pipeline and the job list current. A session that ended sends the page
// back to the sign-in form.
"use strict";

function refresh(element) {
  const url = element.dataset.refresh;
  const every = Number(element.dataset.every || 2000);
  let busy = false;
  setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.redirected || response.status === 401) {
        window.location.reload();
        return;
      }
      if (response.ok) {
        element.innerHTML = await response.text();
        element.dataset.refreshedAt = String(Date.now());
      }
    } catch (_) {
      // The server is restarting or unreachable: keep the last content, try again.
    } finally {
      busy = false;
    }
  }, every);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refresh);
});
