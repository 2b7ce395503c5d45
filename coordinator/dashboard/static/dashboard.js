// hyperfleet dashboard: renders the coordinator's snapshot (GET /api/snapshot, then live from
// the server-sent events of /events) into the page. Plain DOM and inline SVG; no library, no
// network but this origin. Text from the snapshot only ever goes through textContent.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fixed = (v, d) => (isNum(v) ? v.toFixed(d) : "—");
  const pct = (v) => (isNum(v) ? (100 * v).toFixed(1) + "%" : "—");

  function seconds(v) {
    if (!isNum(v)) return "—";
    if (v < 90) return v.toFixed(1) + " s";
    if (v < 5400) return (v / 60).toFixed(1) + " min";
    return (v / 3600).toFixed(1) + " h";
  }

  function bytes(v) {
    if (!isNum(v)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  }

  function facts(dl, rows) {
    dl.replaceChildren();
    for (const [label, value] of rows) {
      dl.append(el("dt", {}, label), el("dd", {}, value));
    }
  }

  function badge(node, status) {
    node.textContent = status;
    node.className = "badge " + String(status).replace(/[^A-Za-z0-9_-]/g, "");
  }

  // ------------------------------------------------------------------ job

  function renderJob(snap) {
    const job = snap.job;
    if (!job) {
      $("job-id").textContent = "(no job yet)";
      badge($("job-status"), "starting");
      facts($("job-facts"), [["status", "waiting for the job to start"]]);
      return;
    }
    $("job-id").textContent = job.job_id;
    document.title = "hyperfleet · " + job.job_id + " · " + job.status;
    badge($("job-status"), job.status);
    const dropped = Object.entries(job.dropped || {}).map(([k, v]) => k + " " + v).join(", ");
    facts($("job-facts"), [
      ["round", job.max_rounds ? job.round + " of at most " + job.max_rounds : String(job.round)],
      ["accuracy", fixed(job.accuracy, 4)],
      ["best", fixed(job.best_accuracy, 4) + (job.best_round ? " (round " + job.best_round + ")" : "")],
      ["target", fixed(job.target_accuracy, 4)],
      ["time", seconds(job.elapsed_s) + " of " + seconds(job.time_budget_s)],
      ["planner", job.planner],
      ["strategy", job.strategy],
      ["moved", bytes(job.bytes_moved)],
      ["dropped", dropped || "none"],
    ]);
    $("job-message").textContent = job.message || "";
  }

  // ------------------------------------------------------------------ chart

  function niceStep(span, ticks) {
    const raw = span / Math.max(1, ticks);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
    return 10 * mag;
  }

  function renderChart(snap) {
    const chart = $("chart");
    chart.replaceChildren();
    const W = 760, H = 440, L = 50, R = 18, T = 14, B = 38;
    const job = snap.job || {};
    const curve = (snap.curve || []).filter((p) => isNum(p.t) && isNum(p.accuracy));
    const pred = snap.prediction || {};
    const budget = isNum(job.time_budget_s) ? job.time_budget_s : null;
    const last = curve.length ? curve[curve.length - 1] : null;
    const toTarget = pred.predicted_time_to_target_s;
    const target = job.target_accuracy;
    let projectedAt = null;
    if (last && isNum(toTarget) && isNum(target)) projectedAt = last.t + toTarget;
    // The whole budget when the job has used a fair share of it; else zoom on what happened
    // (and what is projected), with the budget named at the right edge.
    const span = Math.max(last ? last.t : 0, projectedAt !== null ? projectedAt : 0);
    let xMax = budget !== null ? budget : Math.max(1, span);
    const zoomed = budget !== null && span > 0 && budget > 2 * span;
    if (zoomed) xMax = 1.5 * span;
    if (budget !== null && !zoomed) xMax = Math.max(xMax, Math.min(span, 2 * budget));
    xMax = Math.max(xMax, 1e-3) * 1.02;
    const x = (t) => L + (Math.min(t, xMax) / xMax) * (W - L - R);
    const y = (a) => T + (1 - Math.max(0, Math.min(1, a))) * (H - T - B);

    // grid and axes
    for (let a = 0; a <= 1.0001; a += 0.2) {
      chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(a), y2: y(a) }));
      chart.append(svg("text", { x: L - 6, y: y(a) + 4, "text-anchor": "end" }, a.toFixed(1)));
    }
    const step = niceStep(xMax, 6);
    for (let t = 0; t <= xMax; t += step) {
      chart.append(svg("line", { class: "grid", x1: x(t), x2: x(t), y1: T, y2: H - B }));
      chart.append(svg("text", { x: x(t), y: H - B + 15, "text-anchor": "middle" }, String(Math.round(t * 10) / 10)));
    }
    chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    chart.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    chart.append(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "job time (s)"));
    chart.append(svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle",
      transform: "rotate(-90 12 " + (T + H - B) / 2 + ")" }, "accuracy"));

    if (isNum(target)) {
      chart.append(svg("line", { class: "target", x1: L, x2: W - R, y1: y(target), y2: y(target) }));
      chart.append(svg("text", { class: "label-target", x: L + 6, y: y(target) - 5 }, "target " + target));
    }
    if (budget !== null && !zoomed) {
      chart.append(svg("line", { class: "budget", x1: x(budget), x2: x(budget), y1: T, y2: H - B }));
      chart.append(svg("text", { class: "label-budget", x: x(budget) - 4, y: H - B - 6, "text-anchor": "end" }, "budget"));
    } else if (budget !== null) {
      const note = "budget " + seconds(budget) + " →" + (isNum(pred.predicted_accuracy_at_budget)
        ? " predicted " + fixed(pred.predicted_accuracy_at_budget, 3) + " at its end" : "");
      chart.append(svg("text", { class: "label-budget", x: W - R - 4, y: H - B - 6, "text-anchor": "end" }, note));
    }

    // what the planner predicted for the budget's end, round by round
    const predicted = curve.filter((p) => isNum(p.predicted_at_budget) && isNum(p.planned_at));
    if (predicted.length >= 1) {
      const d = predicted.map((p, i) => (i ? "L" : "M") + x(p.planned_at).toFixed(1) + " " + y(p.predicted_at_budget).toFixed(1)).join(" ");
      chart.append(svg("path", { id: "predicted-curve", class: "predicted", d: d, "data-points": predicted.length }));
      for (const p of predicted) {
        const mark = svg("circle", { class: "predicted-dot", cx: x(p.planned_at), cy: y(p.predicted_at_budget), r: 2.5 });
        mark.append(svg("title", {}, "planning round " + p.round + ": predicted " + fixed(p.predicted_at_budget, 4) + " at the budget's end"));
        chart.append(mark);
      }
    }

    // the planner's projection from now: to the target, and the accuracy at the budget's end
    if (last && projectedAt !== null) {
      chart.append(svg("path", { id: "projection", class: "projection",
        d: "M" + x(last.t).toFixed(1) + " " + y(last.accuracy).toFixed(1) + " L" + x(projectedAt).toFixed(1) + " " + y(target).toFixed(1) }));
      const end = svg("circle", { class: "projection-end", cx: x(projectedAt), cy: y(target), r: 4 });
      end.append(svg("title", {}, "target predicted at " + seconds(projectedAt)));
      chart.append(end);
    }
    if (budget !== null && !zoomed && isNum(pred.predicted_accuracy_at_budget)) {
      const px = x(budget), py = y(pred.predicted_accuracy_at_budget);
      const mark = svg("path", { class: "projection-end", d: "M" + px + " " + (py - 6) + " L" + (px + 6) + " " + py + " L" + px + " " + (py + 6) + " L" + (px - 6) + " " + py + " Z" });
      mark.append(svg("title", {}, "predicted accuracy at the budget's end: " + fixed(pred.predicted_accuracy_at_budget, 4)));
      chart.append(mark);
    }

    // the accuracy itself
    if (curve.length) {
      const d = curve.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p.accuracy).toFixed(1)).join(" ");
      chart.append(svg("path", { id: "accuracy-curve", class: "curve", d: d, "data-points": curve.length }));
      for (const p of curve) {
        const dot = svg("circle", { class: "dot", cx: x(p.t), cy: y(p.accuracy), r: 3 });
        dot.append(svg("title", {}, "round " + p.round + ": " + fixed(p.accuracy, 4) + " at " + seconds(p.t) +
          (p.participants ? " (" + p.results + "/" + p.participants + " results)" : "")));
        chart.append(dot);
      }
    } else {
      chart.append(svg("text", { class: "empty", x: (L + W - R) / 2, y: (T + H - B) / 2, "text-anchor": "middle" },
        "no round has finished yet"));
    }
  }

  // ------------------------------------------------------------------ planner

  const PLAN_LABELS = {
    planner: "planner",
    deadline_s: "round deadline (s)",
    participants: "participants",
    target_participants: "participants wanted",
    available: "agents available",
    explore: "exploring",
    forced: "forced in (fairness)",
    planned_examples: "examples planned",
    stragglers: "stragglers last round",
    budget_left_s: "budget left (s)",
  };
  const PREDICTION_LABELS = {
    feasible: "target feasible",
    predicted_time_to_target_s: "time to target",
    predicted_rounds_to_target: "rounds to target",
    predicted_accuracy_at_budget: "accuracy at budget's end",
    predicted_asymptote: "accuracy asymptote",
  };

  function show(value) {
    if (value === null || value === undefined) return "—";
    if (Array.isArray(value)) return value.length ? value.join(", ") : "none";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (isNum(value)) return Number.isInteger(value) ? String(value) : value.toFixed(Math.abs(value) >= 100 ? 1 : 3);
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function renderPlanner(snap) {
    const pred = snap.prediction || {};
    const rows = [];
    for (const [key, label] of Object.entries(PREDICTION_LABELS)) {
      if (!(key in pred)) continue;
      let v = pred[key];
      if (key === "feasible") v = v === null ? "not known yet" : (v ? "yes" : "no");
      else if (key === "predicted_time_to_target_s") v = seconds(v);
      else v = show(v);
      rows.push([label, v]);
    }
    facts($("prediction-facts"), rows.length ? rows : [["", "none yet"]]);
    const plan = snap.plan || {};
    const planRows = [];
    for (const [key, value] of Object.entries(plan)) {
      if (key.startsWith("predicted_") || key === "feasible") continue; // shown above
      planRows.push([PLAN_LABELS[key] || key.replace(/_/g, " "), show(value)]);
    }
    facts($("plan-facts"), planRows.length ? planRows : [["", "no round planned yet"]]);
  }

  // ------------------------------------------------------------------ fleet

  function renderFleet(snap) {
    const f = snap.fleet || {};
    $("fleet-summary").textContent = isNum(f.agents)
      ? f.agents + " agents: " + f.online + " online (" + f.training + " training), " + f.silent + " silent, " + f.offline + " offline"
      : "";
    const body = $("agents").tBodies[0];
    const rows = [];
    for (const a of snap.agents || []) {
      const tr = el("tr", { "data-agent": a.id });
      const status = el("td");
      const b = el("span");
      badge(b, a.status);
      status.append(b);
      tr.append(
        el("td", {}, a.id),
        status,
        el("td", {}, a.device_class || "—"),
        el("td", { class: "num" }, a.examples),
        el("td", { class: "num" }, isNum(a.heartbeat_age_s) ? seconds(a.heartbeat_age_s) + " ago" : "—"),
        el("td", { class: "num" }, fixed(a.load, 2)),
        el("td", { class: "num" }, a.chosen),
        el("td", { class: "num" }, a.replies),
        el("td", { class: "failure", title: a.last_failure || "" }, a.last_failure || ""),
      );
      rows.push(tr);
    }
    if (!rows.length) {
      const tr = el("tr");
      tr.append(el("td", { colspan: 9, class: "muted" }, "no agent has announced itself yet"));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ ROMA

  function spark(history, slaMs) {
    const W = 160, H = 28;
    const s = svg("svg", { class: "spark", viewBox: "0 0 " + W + " " + H });
    const pts = (history || []).filter((p) => Array.isArray(p) && isNum(p[0]) && isNum(p[1]));
    if (!pts.length) return s;
    const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    const top = Math.max(isNum(slaMs) ? slaMs * 1.5 : 0, ...pts.map((p) => p[1])) || 1;
    const x = (t) => 1 + ((t - t0) / (t1 - t0)) * (W - 2);
    const y = (v) => H - 2 - (Math.min(v, top) / top) * (H - 4);
    if (isNum(slaMs)) s.append(svg("line", { class: "sla", x1: 0, x2: W, y1: y(slaMs), y2: y(slaMs) }));
    s.append(svg("path", { class: "line", d: pts.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ") }));
    const end = pts[pts.length - 1];
    s.append(svg("circle", { class: "end", cx: x(end[0]), cy: y(end[1]), r: 2 }));
    return s;
  }

  function renderRoma(snap) {
    const roma = snap.roma;
    const section = $("roma");
    if (!roma) { section.hidden = true; return; }
    section.hidden = false;
    $("roma-url").textContent = roma.url;
    const err = $("roma-error");
    err.hidden = roma.ok;
    err.textContent = roma.ok ? "" : "ROMA unreachable: " + roma.error + (roma.models.length ? " (showing the last answer)" : "");
    const rows = [];
    for (const m of roma.models || []) {
      const over = isNum(m.window_response_ms) && isNum(m.sla_ms) && m.window_response_ms > m.sla_ms;
      const state = el("td", { title: m.reason || "" });
      const b = el("span");
      badge(b, m.state || "—");
      state.append(b);
      const sparkCell = el("td");
      sparkCell.append(spark(m.history, m.sla_ms));
      const tr = el("tr", { "data-model": m.name });
      tr.append(
        el("td", {}, m.name),
        el("td", {}, show(m.version)),
        state,
        el("td", { class: "num" }, isNum(m.sla_ms) ? m.sla_ms + " ms" : "—"),
        el("td", { class: "num" + (over ? " over" : "") },
          isNum(m.window_response_ms) ? "p" + show(m.percentile) + " " + m.window_response_ms.toFixed(1) + " ms" : "—"),
        el("td", { class: "num" }, isNum(m.window_p50_ms) ? m.window_p50_ms.toFixed(1) + " ms" : "—"),
        el("td", { class: "num" + (isNum(m.window_violation_share) && m.window_violation_share > 0.05 ? " over" : "") }, pct(m.window_violation_share)),
        el("td", { class: "num" }, show(m.requests)),
        el("td", { class: "num" }, show(m.shed)),
        el("td", { class: "num" }, show(m.cores)),
        el("td", { class: "num" }, show(m.queued)),
        sparkCell,
      );
      rows.push(tr);
    }
    if (!rows.length) {
      const tr = el("tr");
      tr.append(el("td", { colspan: 12, class: "muted" }, "no model served yet"));
      rows.push(tr);
    }
    $("roma-models").tBodies[0].replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ wiring

  function render(snap) {
    renderJob(snap);
    renderChart(snap);
    renderPlanner(snap);
    renderFleet(snap);
    renderRoma(snap);
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  }

  function linkState(text, live) {
    const node = $("link");
    node.textContent = text;
    node.className = "link " + (live ? "" : "muted");
  }

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("snapshot", (event) => {
      linkState("live · " + new Date().toLocaleTimeString(), true);
      render(JSON.parse(event.data));
    });
    source.onerror = () => linkState("reconnecting…", false);
  }

  fetch("/api/snapshot", { cache: "no-store" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
    .then(render)
    .catch((e) => linkState("no snapshot: " + e.message, false))
    .finally(connect);
})();
