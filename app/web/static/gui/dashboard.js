// The Dashboard's graphs: a live one polling /sidekiq/stats.json, and history from the samples.
"use strict";
(function () {
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim() || "#888";
  const width = (el) => Math.max(el.clientWidth - 16, 280);
  const MAX_LIVE_POINTS = 120;

  function chart(el, series) {
    const opts = {
      width: width(el),
      height: 220,
      series: [{}].concat(series),
      axes: [
        { stroke: color("--muted"), grid: { stroke: color("--line") } },
        { stroke: color("--muted"), grid: { stroke: color("--line") }, size: 60 },
        { side: 1, scale: "jobs", stroke: color("--muted"), grid: { show: false }, size: 60 },
      ],
      scales: { x: { time: true } },
    };
    const plot = new uPlot(opts, [[]].concat(series.map(() => [])), el);
    window.addEventListener("resize", () => plot.setSize({ width: width(el), height: 220 }));
    return plot;
  }

  const rate = (label, stroke) => ({ label: label, stroke: stroke, width: 2, value: (u, v) => v == null ? "–" : v.toFixed(2) + "/s" });
  const jobs = (label, stroke) => ({ label: label, stroke: stroke, width: 2, scale: "jobs", value: (u, v) => v == null ? "–" : Math.round(v).toLocaleString() });

  // Live ------------------------------------------------------------------------------
  const liveEl = document.getElementById("live-chart");
  const status = document.getElementById("live-status");
  const live = chart(liveEl, [rate("processed", color("--ok")), rate("failed", color("--bad")), jobs("enqueued", color("--focus"))]);
  const data = [[], [], [], []];
  let previous = null;
  let timer = null;
  let seconds = Number(document.getElementById("poll-seconds").value);

  function updateSummary(stats) {
    document.querySelectorAll("[data-stat]").forEach((el) => {
      const value = stats[el.dataset.stat];
      if (typeof value === "number") el.textContent = value.toLocaleString("en-US");
    });
  }

  async function poll() {
    try {
      const response = await fetch("/sidekiq/stats.json", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const stats = await response.json();
      if (previous && stats.taken_at > previous.taken_at) {
        const dt = stats.taken_at - previous.taken_at;
        data[0].push(stats.taken_at);
        data[1].push(Math.max(stats.processed - previous.processed, 0) / dt);
        data[2].push(Math.max(stats.failed - previous.failed, 0) / dt);
        data[3].push(stats.enqueued);
        if (data[0].length > MAX_LIVE_POINTS) data.forEach((column) => column.shift());
        live.setData(data);
        liveEl.dataset.points = String(data[0].length);
      }
      previous = stats;
      updateSummary(stats);
      status.textContent = "updated " + new Date(stats.taken_at * 1000).toLocaleTimeString();
    } catch (error) {
      status.textContent = "poll failed (" + error.message + "); retrying";
    }
  }

  function start() {
    stop();
    poll();
    timer = window.setInterval(poll, seconds * 1000);
  }
  function stop() {
    if (timer !== null) window.clearInterval(timer);
    timer = null;
  }
  document.getElementById("poll-seconds").addEventListener("change", (event) => {
    seconds = Number(event.target.value);
    if (timer !== null) start();
  });
  const toggle = document.getElementById("live-toggle");
  toggle.addEventListener("click", () => {
    const running = timer !== null;
    if (running) stop(); else start();
    toggle.textContent = running ? "Resume" : "Pause";
    toggle.setAttribute("aria-pressed", String(!running));
  });
  start();

  // History ---------------------------------------------------------------------------
  const historyEl = document.getElementById("history-chart");
  const historyStatus = document.getElementById("history-status");
  const history = chart(historyEl, [rate("processed", color("--ok")), rate("failed", color("--bad")), jobs("enqueued", color("--focus")), jobs("retries", color("--warn")), jobs("dead", color("--muted"))]);

  function perSecond(column, times) {
    return column.map((value, i) => i === 0 ? null : Math.max(value - column[i - 1], 0) / Math.max(times[i] - times[i - 1], 1));
  }

  async function loadHistory(range) {
    historyStatus.textContent = "loading…";
    try {
      const response = await fetch("/sidekiq/history.json?range=" + encodeURIComponent(range), { credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const h = await response.json();
      history.setData([h.time, perSecond(h.processed, h.time), perSecond(h.failed, h.time), h.enqueued, h.retry, h.dead]);
      historyEl.dataset.points = String(h.time.length);
      historyStatus.textContent = h.time.length ? h.time.length + " points, " + h.bucket_seconds + " s each" : "no samples in this range yet";
    } catch (error) {
      historyStatus.textContent = "history unavailable (" + error.message + ")";
    }
  }
  document.querySelectorAll("button.range").forEach((button) => {
    button.addEventListener("click", () => {
      document.querySelectorAll("button.range").forEach((b) => b.classList.toggle("primary", b === button));
      loadHistory(button.dataset.range);
    });
  });
  loadHistory("24h");
})();
