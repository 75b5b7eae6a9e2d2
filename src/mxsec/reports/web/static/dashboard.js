/* mxsec TLS report dashboard: draws the charts from the page's <script type="application/json" id="chart-data">
   block with the vendored Chart.js. No inline script anywhere (the Content-Security-Policy forbids it). */
(function () {
  "use strict";

  var GOOD = 99.9, WARN = 98;  /* percent; the same thresholds as the tables (format.py) */
  var PALETTE = ["#d1495b", "#edae49", "#00798c", "#30638e", "#8f5db7", "#66a182", "#e07a5f", "#3d405b",
                 "#f2cc8f", "#81b29a", "#bc4b51"];
  var OTHER = ["#7f8c8d", "#95a5a6", "#5d6d7e", "#a3a3a3"];

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function colourFor(name, known) {
    var i = known.indexOf(name);
    if (i >= 0) return PALETTE[i % PALETTE.length];
    var h = 0;
    for (var k = 0; k < name.length; k++) h = (h * 31 + name.charCodeAt(k)) >>> 0;
    return OTHER[h % OTHER.length];
  }

  function rateColour(value) {
    if (value === null || value === undefined) return css("--none");
    if (value >= GOOD) return css("--good");
    if (value >= WARN) return css("--warn");
    return css("--bad");
  }

  function human(n) {
    if (n === null || n === undefined) return "—";
    return Number(n).toLocaleString("en-US");
  }

  function rateChart(canvas, data) {
    var values = data.rate.filter(function (v) { return v !== null; });
    var low = values.length ? Math.min.apply(null, values) : 0;
    var floor = low >= 99 ? 98 : Math.max(0, Math.floor((low - 2) / 5) * 5);
    return new Chart(canvas, {
      type: "line",
      data: {
        labels: data.days,
        datasets: [{
          label: "Success rate",
          data: data.rate,
          borderColor: css("--accent"),
          backgroundColor: css("--accent"),
          pointBackgroundColor: function (ctx) { return rateColour(ctx.raw); },
          pointBorderColor: function (ctx) { return rateColour(ctx.raw); },
          pointRadius: data.days.length > 60 ? 2 : 4,
          borderWidth: 2,
          spanGaps: false,
          clip: false,
          tension: 0.15
        }]
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          y: { min: floor, max: 100, ticks: { callback: function (v) { return v + "%"; } } },
          x: { offset: data.days.length < 3, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } }
        },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (ctx) {
                var i = ctx.dataIndex;
                return ctx.raw === null ? "no sessions" :
                  ctx.raw.toFixed(2) + "% — " + human(data.successful[i]) + " successful, " +
                  human(data.failed[i]) + " failed";
              }
            }
          }
        }
      }
    });
  }

  function typesChart(canvas, data) {
    var names = data.resultTypes.map(function (t) { return t.name; });
    /* one bar per result type, each readable: the box grows with their number */
    canvas.parentNode.style.height = Math.max(110, 24 * names.length + 40) + "px";
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: names,
        datasets: [{
          label: "Failed sessions",
          data: data.resultTypes.map(function (t) { return t.count; }),
          backgroundColor: names.map(function (n) { return colourFor(n, data.knownTypes); })
        }]
      },
      options: {
        indexAxis: "y", animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } }, y: { ticks: { autoSkip: false } } }
      }
    });
  }

  function failuresChart(canvas, data) {
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.days,
        datasets: data.failuresByDay.map(function (s) {
          return { label: s.name, data: s.data, backgroundColor: colourFor(s.name, data.knownTypes) };
        })
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 8 } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 10, font: { size: 11 } } } }
      }
    });
  }

  function draw() {
    var source = document.getElementById("chart-data");
    if (!source) return;
    var data = JSON.parse(source.textContent);
    var charts = {};
    if (typeof Chart === "undefined") {
      document.querySelectorAll(".chart-box").forEach(function (box) {
        box.textContent = "The chart library did not load.";
      });
      return;
    }
    Chart.defaults.color = css("--muted");
    Chart.defaults.borderColor = css("--grid");
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    var drawers = { "chart-rate": rateChart, "chart-types": typesChart, "chart-failures": failuresChart };
    Object.keys(drawers).forEach(function (id) {
      var canvas = document.getElementById(id);
      if (canvas) charts[id] = drawers[id](canvas, data);
    });
    window.mxsecCharts = charts;
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
