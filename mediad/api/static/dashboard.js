// mediad dashboard: live progress from the API's event stream (the session cookie authorises
// GET /api/v1/events), and the page's live part fetched again when a job changes state.
"use strict";
(function () {
  var live = document.body.dataset.live;  // "all" (the queue) or a job's id (its page)
  if (!live) return;
  var pending = null;

  function mine(ev) { return live === "all" || JSON.parse(ev.data).job === Number(live); }

  function fmtSeconds(s) {
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }

  function refresh() {
    if (pending) return;
    if (live !== "all") { pending = setTimeout(function () { location.reload(); }, 300); return; }
    pending = setTimeout(function () {
      pending = null;
      fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { if (r.redirected || !r.ok) { location.reload(); throw 0; } return r.text(); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("live"), old = document.getElementById("live");
          if (!fresh || !old) return;
          var active = document.activeElement;
          if (active && old.contains(active) && active.tagName === "INPUT") return; // typing
          old.replaceWith(fresh);
        })
        .catch(function () {});
    }, 300);
  }

  function progress(ev) {
    var d = JSON.parse(ev.data);
    var rows = document.querySelectorAll('[data-job="' + d.job + '"]');
    if (!rows.length) { if (mine(ev)) refresh(); return; }
    rows.forEach(function (row) {
      var bar = row.querySelector('[data-role="bar"]');
      if (bar && d.frames_total) { bar.max = d.frames_total; bar.value = d.frames_done || 0; }
      var frames = row.querySelector('[data-role="frames"]');
      if (frames) frames.textContent = (d.frames_done || 0) + "/" + (d.frames_total || "?");
      var fps = row.querySelector('[data-role="fps"]');
      if (fps && d.fps) fps.textContent = d.fps.toFixed(1);
      var eta = row.querySelector('[data-role="eta"]');
      if (eta && d.fps && d.frames_total) eta.textContent = fmtSeconds(Math.max(0, (d.frames_total - (d.frames_done || 0)) / d.fps));
    });
  }

  if (window.EventSource) {
    var es = new EventSource("/api/v1/events");
    es.addEventListener("progress", progress);
    es.addEventListener("state", function (ev) { if (mine(ev)) refresh(); });
    es.onerror = function () {  // the daemon restarting, or the session gone: poll instead
      if (es.readyState === EventSource.CLOSED) setInterval(refresh, 5000);
    };
  } else {
    setInterval(refresh, 5000);
  }
})();
