// Tenet console: the one script. Pages read the same without it; it only makes action
// statuses follow the collector without a reload (GET /ui/actions/live, same-origin, the
// session cookie), every 1.5 s while an action shown is not finished.
"use strict";
(function () {
  var FINAL = { T: true, C: true };
  function cells() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-action-id]"));
  }
  function pending() {
    return cells().filter(function (c) { return !FINAL[c.getAttribute("data-status")]; });
  }
  function apply(a) {
    cells().forEach(function (c) {
      if (c.getAttribute("data-action-id") !== String(a.id)) { return; }
      var was = c.getAttribute("data-status");
      c.setAttribute("data-status", a.status);
      var badge = c.querySelector(".badge");
      if (badge) {
        badge.textContent = a.status;
        badge.className = "badge " + (a.status === "T" ? (a.ret === 0 ? "ok" : "nok") : FINAL[a.status] ? "na" : "busy");
      }
      var label = c.querySelector(".status-label");
      if (label) { label.textContent = a.label; }
      var ret = document.getElementById("ret-" + a.id);
      if (ret && a.ret !== null) { ret.textContent = String(a.ret); }
      if (FINAL[a.status]) {
        var cancel = document.getElementById("cancel-" + a.id);
        if (cancel) { cancel.remove(); }
        // The action's own page shows its output once finished.
        if (!FINAL[was] && c.hasAttribute("data-reload-when-done")) { window.location.reload(); }
      }
    });
  }
  function poll() {
    var ids = pending().map(function (c) { return c.getAttribute("data-action-id"); });
    if (ids.length === 0) { return; }
    fetch("/ui/actions/live?ids=" + ids.join(","), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (list) { list.forEach(apply); })
      .catch(function () {})
      .then(function () { window.setTimeout(poll, 1500); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (pending().length > 0) {
      var live = document.getElementById("live-note");
      if (live) { live.hidden = false; }
      window.setTimeout(poll, 1500);
    }
  });
})();
