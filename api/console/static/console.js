// Shows every <time datetime="..."> in the viewer's time zone (the page renders UTC),
// again after each htmx swap. No inline script: the console's CSP forbids it.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });
  function localize(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var when = new Date(times[i].getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        times[i].title = times[i].getAttribute("datetime");
        times[i].textContent = format.format(when);
      }
    }
    var zones = root.querySelectorAll("[data-zone]");
    for (var j = 0; j < zones.length; j++) {
      zones[j].textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    }
  }
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:afterSettle", function (event) { localize(event.target); });
})();
