// The scoreboard pages of match-stats: no dependencies, no build step. Text from the
// API (names, ids) is only ever set as textContent, never parsed as HTML.
"use strict";
var MatchStats = (function () {
  var API = "/api/v1/match-stats";
  var key = new URLSearchParams(location.search).get("key");

  function withKey(url) {
    if (!key) return url;
    return url + (url.indexOf("?") < 0 ? "?" : "&") + "access_token=" + encodeURIComponent(key);
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function status(text) { document.getElementById("status").textContent = text; }
  function clock(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var m = Math.floor(s / 60);
    return m + ":" + String(s % 60).padStart(2, "0");
  }

  function index() {
    var body = document.querySelector("#matches tbody");
    function refresh() {
      fetch(withKey(API + "/matches/active?limit=100"))
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (list) {
          body.replaceChildren();
          list.matches.forEach(function (m) {
            var tr = el("tr");
            var td = el("td");
            var a = el("a", m.match_id);
            a.href = "/matches/" + encodeURIComponent(m.match_id) + (key ? "?key=" + encodeURIComponent(key) : "");
            td.appendChild(a);
            tr.appendChild(td);
            tr.appendChild(el("td", m.map_name || "–"));
            tr.appendChild(el("td", m.game_mode || "–"));
            tr.appendChild(el("td", m.current_players, "num"));
            tr.appendChild(el("td", m.total_kills, "num"));
            tr.appendChild(el("td", new Date(m.start_time).toLocaleTimeString()));
            body.appendChild(tr);
          });
          status(list.count + " active match" + (list.count === 1 ? "" : "es") + " · " + new Date().toLocaleTimeString());
        })
        .catch(function (e) { status("Cannot load the matches: " + e.message); });
    }
    refresh();
    setInterval(refresh, 2000);
  }

  function match() {
    var id = decodeURIComponent(location.pathname.split("/").pop());
    var players = new Map();
    var summary = null;
    var feed = document.getElementById("feed");
    var board = document.querySelector("#scoreboard tbody");
    document.getElementById("title").textContent = id;
    document.title = id + " · match-stats";

    function name(pid) {
      var p = players.get(pid);
      return (p && p.player_name) || pid;
    }
    function render() {
      var rows = Array.from(players.values()).sort(function (a, b) {
        return b.score - a.score || b.kills - a.kills || a.deaths - b.deaths ||
          (a.player_id < b.player_id ? -1 : 1);
      });
      board.replaceChildren();
      rows.forEach(function (p) {
        var tr = el("tr", null, p.online ? "" : "offline");
        tr.dataset.player = p.player_id;
        var th = el("th", p.player_name || p.player_id, "name");
        th.scope = "row";
        tr.appendChild(th);
        tr.appendChild(el("td", p.team_id || "–"));
        tr.appendChild(el("td", p.score, "num score"));
        tr.appendChild(el("td", p.kills, "num kills"));
        tr.appendChild(el("td", p.deaths, "num deaths"));
        tr.appendChild(el("td", p.assists, "num assists"));
        tr.appendChild(el("td", p.current_streak + " / " + p.best_streak, "num"));
        tr.appendChild(el("td", p.accuracy_pct.toFixed(1) + "%", "num"));
        board.appendChild(tr);
      });
      if (summary) {
        document.getElementById("match-status").textContent = summary.status;
        document.getElementById("match-status").className = summary.status === "completed" ? "completed" : "";
        document.getElementById("map").textContent = summary.map_name || "–";
        document.getElementById("mode").textContent = summary.game_mode || "–";
        document.getElementById("total-kills").textContent = summary.total_kills;
      }
    }
    function tick() {
      if (!summary) return;
      var start = Date.parse(summary.start_time);
      var end = summary.end_time ? Date.parse(summary.end_time) : Date.now();
      document.getElementById("clock").textContent = clock(end - start);
    }
    function addFeed(item) {
      var li = el("li");
      li.dataset.version = item.version;
      if (item.kind === "kill") {
        li.appendChild(el("strong", name(item.killer)));
        li.appendChild(document.createTextNode(" killed "));
        li.appendChild(el("strong", name(item.victim)));
        if (item.weapon) li.appendChild(el("span", " with " + item.weapon, "weapon"));
        if (item.headshot) li.appendChild(el("span", " (headshot)", "headshot"));
      } else {
        li.appendChild(el("strong", name(item.victim)));
        li.appendChild(document.createTextNode(item.kind === "suicide" ? " took their own life" : " died"));
      }
      feed.insertBefore(li, feed.firstChild);
      while (feed.children.length > 30) feed.removeChild(feed.lastChild);
    }

    var source = new EventSource(withKey(API + "/matches/" + encodeURIComponent(id) + "/stream"));
    source.addEventListener("snapshot", function (e) {
      var m = JSON.parse(e.data);
      players = new Map();
      (m.player_stats || []).forEach(function (p) { players.set(p.player_id, p); });
      delete m.player_stats;
      summary = m;
      render(); tick();
      status("Live · version " + e.lastEventId);
    });
    source.addEventListener("delta", function (e) {
      var d = JSON.parse(e.data);
      summary = d.match;
      d.players.forEach(function (p) { players.set(p.player_id, p); });
      d.clocks.forEach(function (c) {
        var p = players.get(c.player_id);
        if (p) Object.assign(p, c);
      });
      d.feed.forEach(addFeed);
      render(); tick();
      status("Live · version " + e.lastEventId);
    });
    source.addEventListener("end", function (e) {
      summary = JSON.parse(e.data);
      render(); tick();
      status("Match over · version " + e.lastEventId);
      source.close();
    });
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) status("Reconnecting…");
      else if (!summary) status("This match is not known (or the service is unreachable).");
    };
    setInterval(tick, 1000);
  }

  return { index: index, match: match };
})();
// The page names its view on the script tag (no inline script: the page's
// Content-Security-Policy allows scripts from this origin only).
MatchStats[document.currentScript.dataset.page]();
