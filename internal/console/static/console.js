// The moat console: fetches its data from /console/api and redraws when the event stream says
// that something changed. Every value is set as text, never as HTML.
"use strict";

const api = "/console/api/";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map(h => el("th", {}, h)))),
    el("tbody", {}, rows.map(r => el("tr", {}, r.map(c => el("td", {}, c))))));
}

function badge(state) {
  return el("span", {class: "badge " + state}, state);
}

async function get(path) {
  const resp = await fetch(api + path, {credentials: "same-origin"});
  if (resp.status === 401) {
    location.reload(); // the session ended: the server shows the sign-in page
    throw new Error("signed out");
  }
  const body = await resp.json();
  if (!resp.ok) throw Object.assign(new Error(body.error || resp.statusText), {status: resp.status});
  return body;
}

function groupLink(id) {
  return el("a", {href: "#sg-" + id, class: "group"}, id);
}

function drawLoadBalancers(snap) {
  const root = document.getElementById("lb-list");
  if (snap.loadBalancers.length === 0) {
    root.replaceChildren(el("p", {class: "empty"}, "No load balancers."));
    return;
  }
  root.replaceChildren(...snap.loadBalancers.map(lb => el("article", {class: "lb", id: "lb-" + lb.name},
    el("h3", {}, lb.name, " ", badge(lb.state)),
    el("p", {}, lb.dnsName, " — ", lb.scheme, " — ", lb.addresses.join(", ")),
    lb.stateReason ? el("p", {class: "problem"}, lb.stateReason) : null,
    el("p", {}, "Security groups: ", lb.securityGroups.length ? lb.securityGroups.map(groupLink).flatMap((a, i) => i ? [", ", a] : [a]) : "none (admits every client)"),
    lb.listeners.map(l => el("div", {class: "listener"},
      el("h4", {}, l.protocol, " ", l.port, l.targetGroup ? " → " + l.targetGroup.name + " (" + l.targetGroup.protocol + " " + l.targetGroup.port + ", " + l.targetGroup.targetType + ")" : ""),
      el("p", {class: "counters"}, "admitted ", l.flows.admitted, " · denied in userspace ", l.flows.deniedSecurityGroup,
        " · no target ", l.flows.deniedNoTarget, " · flow limit ", l.flows.deniedFlowLimit, " · packets dropped by the kernel filter ", l.flows.kernelDropped),
      l.targetGroup ? table(["Target", "Address", "Port", "Zone", "Health", "Why"],
        l.targetGroup.targets.map(t => [t.id, t.address || "", t.port, t.zone || "", badge(t.state), t.description || t.reason || ""])) : null)))));
}

function drawGroups(snap) {
  const root = document.getElementById("sg-list");
  const rules = rs => rs.length ? table(["Protocol", "Ports", "Peer", "Description"],
    rs.map(r => [r.protocol, r.ports, r.peer.startsWith("sg-") ? groupLink(r.peer) : r.peer, r.description || ""])) : el("p", {class: "empty"}, "none");
  root.replaceChildren(...snap.securityGroups.map(g => el("article", {class: "sg", id: "sg-" + g.id},
    el("h3", {}, g.id, " ", el("span", {class: "name"}, g.name)),
    g.description ? el("p", {}, g.description) : null,
    el("p", {}, "Used by: ", g.usedBy.length ? g.usedBy.join(", ") : "nothing"),
    el("p", {}, "Referenced by: ", g.referencedBy.length ? g.referencedBy.map(groupLink).flatMap((a, i) => i ? [", ", a] : [a]) : "no group"),
    el("h4", {}, "Inbound"), rules(g.inbound),
    el("h4", {}, "Outbound"), rules(g.outbound))));
}

function drawDenials(d) {
  const notes = d.notes.map(n => el("li", {}, n));
  if (d.dropped) notes.push(el("li", {class: "problem"}, d.dropped + " flow log entries were missed: the console fell behind."));
  document.getElementById("denied-notes").replaceChildren(...notes);
  document.getElementById("denied-listeners").replaceChildren(d.listeners.length ? table(
    ["Load balancer", "Listener", "Dropped by the kernel filter (packets)", "Denied in userspace (flows)", "Would admit a client"],
    d.listeners.map(l => [l.loadBalancer, l.listener, l.flows.kernelDropped, l.flows.deniedSecurityGroup, l.suggestion])) : el("p", {class: "empty"}, "No listeners."));
  document.getElementById("denied-rules").replaceChildren(d.byRule.length ? table(["Missing rule", "Denied flows", "Last"],
    d.byRule.map(r => [r.suggestion, r.count, new Date(r.last).toLocaleTimeString()])) : el("p", {class: "empty"}, "No denied flow listed yet."));
  document.getElementById("denied-recent").replaceChildren(d.recent.length ? table(["Time", "Action", "Where", "Protocol", "From", "To", "Reason", "Would be admitted by"],
    d.recent.map(e => [new Date(e.time).toLocaleTimeString(), e.action, e.where, e.protocol, e.from, e.to || "", e.reason, e.suggestion])) : el("p", {class: "empty"}, "None yet."));
}

async function refreshSnapshot() {
  const snap = await get("snapshot");
  drawLoadBalancers(snap);
  drawGroups(snap);
}

async function refreshDenials() {
  drawDenials(await get("denials"));
}

function setLive(text, ok) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.className = "live " + (ok ? "ok" : "down");
}

function connect() {
  const events = new EventSource(api + "events");
  events.addEventListener("hello", () => {
    setLive("live", true);
    refreshSnapshot().catch(console.error);
    refreshDenials().catch(console.error);
  });
  events.addEventListener("changed", () => {
    refreshSnapshot().catch(console.error);
    refreshDenials().catch(console.error); // the counters per listener are part of the state
  });
  events.addEventListener("denied", () => refreshDenials().catch(console.error));
  events.onerror = () => {
    setLive("reconnecting…", false);
    get("snapshot").catch(() => {}); // reloads to the sign-in page if the session ended
  };
}

// explanation renders moat explain's answer: per destination address, the verdict, each stage
// the flow passes or is stopped at, and the change that would admit it.
function explanation(answer) {
  return (answer.Paths || []).flatMap(p => [
    el("h3", {class: "verdict-" + p.Verdict}, `${p.To}: ${p.Verdict.replaceAll("_", " ")}`),
    table(["stage", "result", "detail"], (p.Steps || []).map(s => [s.Stage, s.Result, s.Detail])),
    p.Fix ? [el("p", {}, "To admit it:"), el("pre", {}, p.Fix)] : [],
  ]);
}

function setupExplain() {
  const form = document.getElementById("explain-form");
  const out = document.getElementById("explain-result");
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const q = new URLSearchParams(new FormData(form));
    try {
      out.replaceChildren(...explanation(await get("explain?" + q)));
    } catch (err) {
      out.replaceChildren(el("p", {class: "problem"}, err.status === 501 ? "Explain is unavailable in this moat lb." : String(err.message)));
    }
  });
}

setupExplain();
connect();
