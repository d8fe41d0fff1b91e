// Outpost web UI: progressive enhancement only. Every page reads and works without this file; with it,
// lists and builds update live (server-sent events), logs follow, and copy buttons and the editor help.
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  // Replaces a region's HTML, keeping keyboard focus on the same control if it is still there.
  function swap(element, html) {
    var active = document.activeElement;
    var key = active && element.contains(active) ? focusKey(active) : null;
    element.innerHTML = html;
    if (key) {
      var again = element.querySelector(key);
      if (again) again.focus();
    }
    tick();
  }
  function focusKey(el) {
    if (el.id) return "#" + CSS.escape(el.id);
    if (el.getAttribute("href")) return el.tagName.toLowerCase() + '[href="' + CSS.escape(el.getAttribute("href")) + '"]';
    var form = el.form;
    if (form && form.getAttribute("action")) return 'form[action="' + CSS.escape(form.getAttribute("action")) + '"] button';
    return null;
  }

  // --- durations tick while a build or step runs --------------------------------------------------
  function format(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }
  function ago(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 45) return "just now";
    if (s < 3600) return Math.max(1, Math.round(s / 60)) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    var days = Math.floor(s / 86400);
    return days + " day" + (days === 1 ? "" : "s") + " ago";
  }
  function tick() {
    var now = Date.now() / 1000;
    $all("time[data-relative]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(t)) el.textContent = ago(now - t / 1000);
    });
    $all("[data-started]:not([data-finished])").forEach(function (el) {
      el.textContent = format(now - parseFloat(el.getAttribute("data-started")));
    });
  }
  setInterval(tick, 1000);

  function listen(url, handlers) {
    if (!url || !window.EventSource) return null;
    var source = new EventSource(url);
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (e) { handlers[name](JSON.parse(e.data)); });
    });
    source.addEventListener("end", function () { source.close(); });
    return source;
  }

  // --- the navigation: behind a Menu button on narrow screens (CSS decides when) -----------------------
  document.documentElement.classList.add("js");
  var menu = $(".menu-toggle");
  var nav = $("#main-nav");
  if (menu && nav) {
    menu.hidden = false;
    menu.addEventListener("click", function () {
      var open = !nav.classList.contains("open");
      nav.classList.toggle("open", open);
      nav.parentNode.classList.toggle("menu-open", open);
      menu.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  // --- forms that undo work ask first (a live region may have moved the button under the pointer) -----
  document.addEventListener("submit", function (e) {
    var message = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) e.preventDefault();
  });

  // --- a Git integration's address follows its provider while it is one of the hosted defaults ---------
  $all("select[data-url-defaults]").forEach(function (select) {
    var defaults = JSON.parse(select.getAttribute("data-url-defaults"));
    var field = document.getElementById(select.getAttribute("data-url-field"));
    if (!field) return;
    select.addEventListener("change", function () {
      var known = Object.keys(defaults).map(function (k) { return defaults[k]; });
      if (field.value === "" || known.indexOf(field.value) >= 0) field.value = defaults[select.value] || "";
    });
  });

  // --- the login form: a link's #L100 is never sent to the server, so it rides along in `next` ------
  var nextField = $('form[action="/login"] input[name="next"]');
  if (nextField && /^#L\d+$/.test(location.hash) && nextField.value.indexOf("#") < 0) nextField.value += location.hash;

  // --- the build list ----------------------------------------------------------------------------
  var rows = $("#build-rows");
  if (rows) listen(rows.getAttribute("data-live"), { rows: function (d) { swap(rows, d.html); } });

  // --- a build: header, steps and the selected step's log ------------------------------------------
  var build = $("#build");
  var log = $("#log");
  var follow = $("#follow");
  var following = true;

  function atBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 24; }
  function setFollowing(on) {
    following = on;
    if (follow) {
      follow.setAttribute("aria-pressed", on ? "true" : "false");
      follow.textContent = on ? "Following" : "Paused — follow";
    }
    if (on && log) log.scrollTop = log.scrollHeight;
  }

  function showLine(number) {
    var line = document.getElementById("L" + number);
    if (!line) return false;
    $all(".l.hl").forEach(function (l) { l.classList.remove("hl"); });
    line.classList.add("hl");
    log.scrollTop = line.offsetTop - log.clientHeight / 3;
    return true;
  }

  function jumpToHash() {
    var m = /^#L(\d+)$/.exec(location.hash);
    if (!m || !log) return false;
    var number = parseInt(m[1], 10);
    setFollowing(false);
    if (!showLine(number)) {
      var url = new URL(location.href);
      url.searchParams.set("start", String(Math.max(1, number - 100)));
      if (url.search !== location.search) location.replace(url.pathname + url.search + location.hash);
    }
    return true;
  }

  if (log) {
    if (follow && build && build.getAttribute("data-live")) {  // a finished build has nothing to follow
      follow.hidden = false;
      follow.addEventListener("click", function () { setFollowing(!following); });
    }
    log.addEventListener("scroll", function () {
      if (following && !atBottom()) setFollowing(false);
    });
    window.addEventListener("hashchange", jumpToHash);
    if (!jumpToHash()) setFollowing(true);
    var earlier = $("#earlier");
    if (earlier) earlier.addEventListener("click", function (e) {
      e.preventDefault();
      var first = parseInt(earlier.getAttribute("data-first"), 10);
      var start = Math.max(1, first - parseInt(earlier.getAttribute("data-page"), 10));
      fetch(earlier.getAttribute("data-src") + "?start=" + start + "&count=" + (first - start), { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          var before = log.scrollHeight;
          log.insertAdjacentHTML("afterbegin", html);
          log.scrollTop += log.scrollHeight - before;
          earlier.setAttribute("data-first", String(start));
          if (start <= 1) earlier.parentNode.remove();
          else earlier.textContent = "Show earlier lines (1–" + (start - 1) + " are not shown)";
        })
        .catch(function () { location.href = earlier.href; });
    });
  }

  // --- search: the query's matches marked in the lines shown, with previous/next ---------------------
  if (log && log.getAttribute("data-q")) {
    var needle = log.getAttribute("data-q").toLowerCase();
    var marks = [];
    $all(".l > span", log).forEach(function (content) {
      var walker = document.createTreeWalker(content, NodeFilter.SHOW_TEXT);
      var texts = [];
      while (walker.nextNode()) texts.push(walker.currentNode);
      texts.forEach(function (node) {
        var text = node.nodeValue;
        var at = text.toLowerCase().indexOf(needle);
        if (at < 0) return;
        var parts = document.createDocumentFragment();
        var from = 0;
        while (at >= 0) {
          parts.appendChild(document.createTextNode(text.slice(from, at)));
          var mark = document.createElement("mark");
          mark.className = "hit";
          mark.textContent = text.slice(at, at + needle.length);
          parts.appendChild(mark);
          marks.push(mark);
          from = at + needle.length;
          at = text.toLowerCase().indexOf(needle, from);
        }
        parts.appendChild(document.createTextNode(text.slice(from)));
        node.parentNode.replaceChild(parts, node);
      });
    });
    var hitNav = $("#hit-nav");
    if (hitNav && marks.length) {
      var counter = $("#hit-count");
      var at = -1;
      var target = /^#L(\d+)$/.exec(location.hash);
      var go = function (i) {
        if (at >= 0) marks[at].classList.remove("current");
        at = (i + marks.length) % marks.length;
        var mark = marks[at];
        mark.classList.add("current");
        setFollowing(false);
        var line = mark.closest(".l");
        log.scrollTop = line.offsetTop - log.clientHeight / 3;
        counter.textContent = (at + 1) + " of " + marks.length + " shown";
      };
      hitNav.hidden = false;
      $("#hit-next").addEventListener("click", function () { go(at + 1); });
      $("#hit-prev").addEventListener("click", function () { go(at - 1); });
      var first = 0;
      if (target) {
        marks.some(function (m, i) { if (m.closest(".l").id === "L" + target[1]) { first = i; return true; } return false; });
      }
      go(first);
    }
  }

  if (build) {
    var header = $("#build-header");
    var steps = $("#steps");
    var outputs = $("#build-outputs");
    var shownOutputs = null;  // replaced only when they change: a section the reader opened stays open
    var auto = build.getAttribute("data-auto") === "true";
    var current = build.getAttribute("data-step");
    listen(build.getAttribute("data-live"), {
      end: function () { if (follow) follow.hidden = true; },
      state: function (d) {
        swap(header, d.header);
        swap(steps, d.steps);
        if (outputs && d.outputs !== undefined && d.outputs !== shownOutputs) {
          if (shownOutputs !== null || outputs.innerHTML.trim() !== d.outputs.trim()) swap(outputs, d.outputs);
          shownOutputs = d.outputs;
        }
        if (auto && following && d.active && d.active !== current) location.replace(location.pathname);
      },
      lines: function (d) {
        if (!log) return;
        var next = parseInt(log.getAttribute("data-next"), 10);
        var holder = document.createElement("div");
        holder.innerHTML = d.html;
        var skip = next - d.first;  // lines this page already shows (after a reconnect)
        var count = 0;
        Array.prototype.slice.call(holder.children).forEach(function (line, i) {
          if (i >= skip) { log.appendChild(line); count += 1; }
        });
        log.setAttribute("data-next", String(next + count));
        var empty = $("#log-empty");
        if (empty) empty.remove();
        var counter = $("#line-count");
        if (counter) counter.textContent = (next + count - 1) + " lines";
        if (following) log.scrollTop = log.scrollHeight;
      }
    });
  }

  // --- copy buttons ------------------------------------------------------------------------------
  $all("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var target = document.getElementById(button.getAttribute("data-copy"));
      var text = target.value !== undefined ? target.value : target.textContent;
      var status = document.getElementById(button.getAttribute("data-copy") + "-copied");
      function done() { if (status) { status.textContent = "Copied"; setTimeout(function () { status.textContent = ""; }, 3000); } }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { fallback(target); done(); });
      } else { fallback(target); done(); }
    });
  });
  function fallback(target) {
    if (target.select) { target.select(); document.execCommand("copy"); }
  }
  $all("button[data-reveal]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var input = document.getElementById(button.getAttribute("data-reveal"));
      var shown = input.type === "text";
      input.type = shown ? "password" : "text";
      button.textContent = shown ? "Show" : "Hide";
      button.setAttribute("aria-pressed", shown ? "false" : "true");
    });
  });

  // --- the pipeline form: the no-runner warning follows the chosen runtime -------------------------------
  var runtimeSelect = $("#runtime");
  var runtimeIdle = $("#runtime-idle");
  if (runtimeSelect && runtimeIdle) runtimeSelect.addEventListener("change", function () {
    var option = runtimeSelect.options[runtimeSelect.selectedIndex];
    runtimeIdle.hidden = !(option && option.getAttribute("data-idle") === "true");
  });

  // --- the pipeline form: only the chosen source's fields (without JS both show; the server ignores one) --
  var sources = $all('input[name="source"]');
  if (sources.length) {
    var showSource = function () {
      var chosen = sources.filter(function (r) { return r.checked; }).map(function (r) { return r.value; })[0];
      $all("[data-source]").forEach(function (set) { set.hidden = set.getAttribute("data-source") !== chosen; });
    };
    sources.forEach(function (r) { r.addEventListener("change", showSource); });
    showSource();
  }

  // --- the YAML editor: line numbers that follow the text, problems that jump to their line ---------
  var yaml = $("textarea.code");
  var gutter = $(".editor .gutter");
  if (yaml && gutter) {
    var bad = (yaml.getAttribute("data-bad") || "").split(",").filter(Boolean).map(Number);
    var titles = {};
    var kinds = {};
    $all("span.bad, span.warned", gutter).forEach(function (s) {
      titles[s.textContent] = s.getAttribute("title");
      kinds[s.textContent] = s.className;
    });
    var shown = -1;
    var renumber = function () {
      var count = yaml.value.split("\n").length;
      if (count === shown) return;
      shown = count;
      var html = [];
      for (var i = 1; i <= count; i++) {
        var kind = bad.indexOf(i) >= 0 ? "bad" : kinds[i] === "warned" ? "warned" : "";
        html.push(kind ? '<span class="' + kind + '" title="' + (titles[i] || "").replace(/"/g, "&quot;").replace(/</g, "&lt;") + '">' + i + "</span>" : "<span>" + i + "</span>");
      }
      gutter.innerHTML = html.join("");
      gutter.scrollTop = yaml.scrollTop;
    };
    yaml.addEventListener("input", renumber);
    yaml.addEventListener("scroll", function () { gutter.scrollTop = yaml.scrollTop; });
    renumber();
    $all("a[data-goto]").forEach(function (link) {
      link.addEventListener("click", function (e) {
        e.preventDefault();
        var parts = link.getAttribute("data-goto").split(":").map(Number);
        var lines = yaml.value.split("\n");
        var start = 0;
        for (var i = 0; i < parts[0] - 1 && i < lines.length; i++) start += lines[i].length + 1;
        var end = start + (lines[parts[0] - 1] || "").length;
        yaml.focus();
        yaml.setSelectionRange(start, end);
        yaml.scrollTop = Math.max(0, (parts[0] - 5) * parseFloat(getComputedStyle(yaml).lineHeight));
      });
    });
    var problems = $("#problems");
    if (problems) problems.focus();
  }
})();
