/*! Lydian web chat widget. Embed with one tag:
 *   <script src="https://hub.example/widget.js" data-room="support"
 *           data-token-url="/my-token"></script>
 * Options (data-* attributes on the script tag, or LydianWidget.mount({...})):
 *   room        room id to join (required)
 *   token-url   URL returning {"token": "..."} (POST, or GET if POST is refused);
 *               without it the widget connects as a guest
 *   target      CSS selector of an element to render into (default: a launcher button)
 *   title       panel title (default: "#<room>")
 *   hub         hub base URL (default: where widget.js was loaded from)
 *   open        "true" to open the launcher panel at once
 *   max-record  longest voice message in seconds (default 120; it stops and is sent then)
 * Vanilla JS, no build step, no dependencies. User text only ever reaches the DOM
 * through textContent and attributes checked here; never through innerHTML.
 */
(function () {
  "use strict";

  var VERSION = "0.1.0";
  var HISTORY_PAGE = 30;
  var TYPING_RESEND_MS = 3000;
  var TYPING_SHOW_MS = 8000;
  var BACKOFF_BASE_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var BUSY_BACKOFF_MS = 5000; // at least this long after 1013 (over a connection limit)
  var MAX_RESENDS = 20; // a frame refused with rate_limited/store_unavailable this often is given up
  var UPLOAD_TRIES = 5; // uploads answered 429 (or 503 with Retry-After) are retried this often
  var MAX_WAIT_S = 120; // a longer Retry-After is shown as an error, not waited out
  var GROUP_GAP_S = 300;
  var MAX_RECORD_S = 120; // a voice message stops (and is sent) at this length
  var SPEECH_MAX_CHARS = 4000; // an answer read aloud: this much of it (the hub's default limit is 4096)
  var SVG_NS = "http://www.w3.org/2000/svg";
  var ICONS = {
    chat: "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z",
    close: "M6 6l12 12M18 6L6 18",
    send: "M3 11.5L21 3l-8.5 18-2.2-7.3L3 11.5z",
    clip:
      "M21 11.5l-8.6 8.6a5.5 5.5 0 0 1-7.8-7.8l8.6-8.6a3.7 3.7 0 0 1 5.2 5.2l-8.6 8.6a1.8 1.8 0 0 1-2.6-2.6l7.9-7.9",
    stop: "M7 7h10v10H7z",
    mic: "M12 3a3 3 0 0 1 3 3v6a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3zM5 11a7 7 0 0 0 14 0M12 18v3M8 21h8",
    play: "M8 5v14l11-7z",
    file: "M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8l-5-5zM14 3v5h5",
  };

  var currentScript = document.currentScript;

  // ------------------------------------------------------------------ small DOM helpers

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    if (attrs) {
      for (var key in attrs) {
        if (!Object.prototype.hasOwnProperty.call(attrs, key)) continue;
        var value = attrs[key];
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") el.className = value;
        else if (key === "text") el.textContent = value;
        else if (key.slice(0, 2) === "on") el.addEventListener(key.slice(2), value);
        else el.setAttribute(key, value === true ? "" : String(value));
      }
    }
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      el.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return el;
  }

  function icon(name, cls) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "lw-icon " + (cls || ""));
    var path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", ICONS[name]);
    svg.appendChild(path);
    return svg;
  }

  function initials(name) {
    var parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
    var letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || "?")[0];
    return letters.toUpperCase();
  }

  function hue(id) {
    var n = 0;
    for (var i = 0; i < String(id).length; i++) n = (n * 31 + String(id).charCodeAt(i)) >>> 0;
    return n % 360;
  }

  function avatar(user, cls) {
    var el = h("span", { class: "lw-avatar " + (cls || ""), "aria-hidden": "true", text: initials(user.name) });
    el.style.setProperty("--lw-hue", String(hue(user.id)));
    return el;
  }

  function formatTime(ts) {
    var d = new Date(ts * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function formatSize(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(bytes < 10240 ? 1 : 0) + " KB";
    return (bytes / 1048576).toFixed(1) + " MB";
  }

  function safeHref(raw, base) {
    try {
      var url = new URL(raw, base);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  // ------------------------------------------------------------------ safe markdown subset

  var INLINE = new RegExp(
    [
      // bounded repeats keep every pattern linear on hostile input ("`" or "[" x 16000)
      "(`{1,3})([^`\\n]{1,2000}?)\\1(?!`)", // 1,2 inline code
      "\\[([^\\[\\]\\n]{1,500})\\]\\(([^()\\s]{1,2000})\\)", // 3,4 [text](url)
      "(https?:\\/\\/[^\\s<>]{0,2000}[^\\s<>.,;:!?)\\]'\"])", // 5 bare URL
      "\\*\\*([^*\\n]+)\\*\\*", // 6 bold
      "(?<![\\w])__([^_\\n]+)__(?![\\w])", // 7 bold
      "\\*([^*\\s][^*\\n]*)\\*", // 8 italic
      "(?<![\\w])_([^_\\s][^_\\n]*)_(?![\\w])", // 9 italic
      "~~([^~\\n]+)~~", // 10 strike
    ].join("|"),
    "g"
  );

  function link(href, label) {
    var a = h("a", { href: href, target: "_blank", rel: "noopener noreferrer nofollow" });
    inline(label, a);
    return a;
  }

  function inline(text, parent) {
    var last = 0;
    var m;
    INLINE.lastIndex = 0;
    var matches = [];
    while ((m = INLINE.exec(text)) !== null) matches.push(m);
    matches.forEach(function (m) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      last = m.index + m[0].length;
      var href;
      if (m[2] !== undefined) parent.appendChild(h("code", { text: m[2] }));
      else if (m[3] !== undefined) {
        href = safeHref(m[4]);
        if (href && /^https?:/i.test(m[4])) parent.appendChild(link(href, m[3]));
        else parent.appendChild(document.createTextNode(m[0]));
      } else if (m[5] !== undefined) {
        href = safeHref(m[5]);
        parent.appendChild(href ? h("a", { href: href, target: "_blank", rel: "noopener noreferrer nofollow", text: m[5] }) : document.createTextNode(m[5]));
      } else if (m[6] !== undefined || m[7] !== undefined) {
        var b = h("strong");
        inline(m[6] !== undefined ? m[6] : m[7], b);
        parent.appendChild(b);
      } else if (m[8] !== undefined || m[9] !== undefined) {
        var i = h("em");
        inline(m[8] !== undefined ? m[8] : m[9], i);
        parent.appendChild(i);
      } else if (m[10] !== undefined) {
        var s = h("s");
        inline(m[10], s);
        parent.appendChild(s);
      }
    });
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  var LIST_ITEM = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;

  /** Render the markdown subset (fenced code, lists, quotes, paragraphs, inline) as DOM. */
  function renderMarkdown(text) {
    var frag = document.createDocumentFragment();
    var lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    var i = 0;
    var para = [];
    function flush() {
      if (!para.length) return;
      var p = h("p");
      para.forEach(function (line, n) {
        if (n) p.appendChild(h("br"));
        inline(line, p);
      });
      frag.appendChild(p);
      para = [];
    }
    while (i < lines.length) {
      var line = lines[i];
      var fence = /^\s{0,3}(```+|~~~+)\s*([\w+#.-]*)\s*$/.exec(line);
      if (fence) {
        flush();
        var body = [];
        i++;
        while (i < lines.length && lines[i].trim().indexOf(fence[1]) !== 0) body.push(lines[i++]);
        i++; // closing fence (or end of text)
        var code = h("code", { text: body.join("\n") });
        if (fence[2]) code.setAttribute("data-lang", fence[2]);
        frag.appendChild(h("pre", { class: "lw-code", tabindex: "0" }, [code]));
        continue;
      }
      var item = LIST_ITEM.exec(line);
      if (item) {
        flush();
        var ordered = /\d/.test(item[1]);
        var list = h(ordered ? "ol" : "ul");
        if (ordered && parseInt(item[1], 10) !== 1) list.setAttribute("start", String(parseInt(item[1], 10)));
        while (i < lines.length && (item = LIST_ITEM.exec(lines[i])) && /\d/.test(item[1]) === ordered) {
          var li = h("li");
          inline(item[2], li);
          list.appendChild(li);
          i++;
        }
        frag.appendChild(list);
        continue;
      }
      if (/^\s{0,3}>\s?/.test(line)) {
        flush();
        var quote = h("blockquote");
        var qlines = [];
        while (i < lines.length && /^\s{0,3}>\s?/.test(lines[i])) qlines.push(lines[i++].replace(/^\s{0,3}>\s?/, ""));
        qlines.forEach(function (q, n) {
          if (n) quote.appendChild(h("br"));
          inline(q, quote);
        });
        frag.appendChild(quote);
        continue;
      }
      if (!line.trim()) flush();
      else para.push(line);
      i++;
    }
    flush();
    return frag;
  }

  // ------------------------------------------------------------------ the widget

  function Widget(options) {
    this.opts = options;
    this.room = options.room;
    this.hub = (options.hub || "").replace(/\/+$/, "");
    this.wsUrl = this.hub.replace(/^http/, "ws") + "/ws";
    this.state = "idle";
    this.token = null;
    this.me = null;
    this.epoch = null;
    this.lastOffset = null;
    this.oldest = null;
    this.hasMore = true;
    this.loadingOlder = false;
    this.messages = new Map(); // offset -> element
    this.streams = new Map(); // stream_id -> {el, text, seq, agent}
    this.outbox = new Map(); // client id -> send frame (resent after a reconnect)
    this.recent = new Map(); // id -> the last frames sent with an id (to resend when refused)
    this.held = new Map(); // id -> frame waiting for a retry_after to pass (in order)
    this.tries = new Map(); // id -> how often it was refused as rate_limited/store_unavailable
    this.holdTimer = null;
    this.holdUntil = 0;
    this.reconnectHint = 0; // seconds, from a reconnect frame (hub shutting down)
    this.revokedToken = null;
    this.presence = new Map();
    this.typing = new Map();
    this.uploads = [];
    this.atts = new Map(); // attachment id -> processing state (see "attachment processing")
    this.attempt = 0;
    this.seq = 0;
    this.lastTypingSent = 0;
    this.ws = null;
    this.stats = { connects: 0, joins: 0, lastSince: null, replayed: 0, duplicatesDropped: 0, frames: 0, slowedDown: 0, resent: 0, lastDelay: null };
    this.build();
    this.connect();
  }

  Widget.prototype.nextId = function (prefix) {
    this.seq += 1;
    return prefix + "-" + Date.now().toString(36) + "-" + this.seq + "-" + Math.random().toString(36).slice(2, 7);
  };

  // ---------------------------------------------------------------- layout

  Widget.prototype.build = function () {
    var self = this;
    var opts = this.opts;
    var inlineTarget = opts.target ? document.querySelector(opts.target) : null;
    this.mode = inlineTarget ? "inline" : "launcher";
    this.host = h("div", { class: "lydian-widget-host", "data-lydian-room": this.room });
    this.host.style.visibility = "hidden";
    var root = (this.root = this.host.attachShadow({ mode: "open" }));
    var css = h("link", { rel: "stylesheet", href: this.hub + "/widget.css?v=" + VERSION });
    css.addEventListener("load", function () {
      self.host.style.visibility = "";
    });
    css.addEventListener("error", function () {
      self.host.style.visibility = "";
    });
    root.appendChild(css);

    var panelId = "lw-panel-" + Math.random().toString(36).slice(2, 8);
    var title = opts.title || "#" + this.room;
    this.statusText = h("span", { class: "lw-status-text", text: "Connecting…" });
    this.status = h("span", { class: "lw-status", role: "status", "aria-live": "polite" }, [
      h("span", { class: "lw-dot", "aria-hidden": "true" }),
      this.statusText,
    ]);
    this.slowNote = h("span", { class: "lw-slow", "aria-live": "polite", hidden: true, text: "Sending slowed down…" });
    this.presenceList = h("ul", { class: "lw-presence", "aria-label": "Online now" });
    this.presenceCount = h("span", { class: "lw-presence-count" });
    var header = h("header", { class: "lw-header" }, [
      h("div", { class: "lw-heading" }, [h("h2", { class: "lw-title", text: title }), this.status, this.slowNote]),
      h("div", { class: "lw-online" }, [this.presenceList, this.presenceCount]),
    ]);
    if (this.mode === "launcher") {
      header.appendChild(
        h("button", { type: "button", class: "lw-icon-btn lw-close", "aria-label": "Close chat", onclick: function () { self.toggle(false); } }, [icon("close")])
      );
    }

    this.older = h("div", { class: "lw-older", "aria-hidden": "true" });
    this.list = h("div", { class: "lw-messages" });
    this.streamBox = h("div", { class: "lw-streams" });
    this.pendingBox = h("div", { class: "lw-pending" });
    this.log = h("div", { class: "lw-log", role: "log", "aria-live": "polite", "aria-label": "Messages in " + title, tabindex: "0" }, [
      this.older,
      this.list,
      this.streamBox,
      this.pendingBox,
    ]);
    this.log.addEventListener("scroll", function () {
      if (self.log.scrollTop < 80) self.loadOlder();
    });
    this.typingLine = h("div", { class: "lw-typing", "aria-live": "polite" });

    this.input = h("textarea", { class: "lw-input", rows: "1", "aria-label": "Message " + title, placeholder: "Message " + title, maxlength: "16000" });
    this.input.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        self.submit();
      }
    });
    this.input.addEventListener("input", function () {
      self.autosize();
      self.onTyping();
    });
    this.input.addEventListener("blur", function () {
      self.stopTyping();
    });
    this.fileInput = h("input", { type: "file", multiple: true, hidden: true, tabindex: "-1", accept: "image/*,audio/*,.pdf,.txt,.md,.csv,.docx,.xlsx,.pptx,.odt,.ods" });
    this.fileInput.addEventListener("change", function () {
      self.addFiles(self.fileInput.files);
      self.fileInput.value = "";
    });
    this.chips = h("ul", { class: "lw-chips", "aria-label": "Attachments to send" });
    this.sendButton = h("button", { type: "submit", class: "lw-icon-btn lw-send", "aria-label": "Send message" }, [icon("send")]);
    // voice messages: hidden where the browser cannot record (no MediaRecorder, no microphone API)
    this.micButton = h("button", { type: "button", class: "lw-icon-btn lw-mic", "aria-label": "Record a voice message", title: "Record a voice message", hidden: !canRecord(), onclick: function () { self.startRecording(); } }, [icon("mic")]);
    this.recTime = h("span", { class: "lw-rec-time", text: "0:00" });
    this.recBar = h("div", { class: "lw-rec", hidden: true, role: "group", "aria-label": "Recording a voice message" }, [
      h("span", { class: "lw-rec-dot", "aria-hidden": "true" }),
      h("span", { class: "lw-rec-label", text: "Recording" }),
      this.recTime,
      h("button", { type: "button", class: "lw-rec-cancel", onclick: function () { self.stopRecording(false); } }, ["Cancel"]),
      h("button", { type: "button", class: "lw-rec-send", "aria-label": "Stop and send", title: "Stop and send", onclick: function () { self.stopRecording(true); } }, [icon("stop"), "Send"]),
    ]);
    var form = h("form", { class: "lw-composer" }, [
      this.chips,
      h("div", { class: "lw-row" }, [
        h("button", { type: "button", class: "lw-icon-btn lw-attach", "aria-label": "Attach a file", title: "Attach an image, audio clip or document", onclick: function () { self.fileInput.click(); } }, [icon("clip")]),
        this.fileInput,
        this.micButton,
        this.input,
        this.sendButton,
      ]),
      this.recBar,
      h("div", { class: "lw-hint", id: panelId + "-hint", text: "Enter to send · Shift+Enter for a new line" }),
    ]);
    this.input.setAttribute("aria-describedby", panelId + "-hint");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      self.submit();
    });
    this.drop = h("div", { class: "lw-drop", "aria-hidden": "true" }, [h("span", { text: "Drop to attach" })]);

    this.panel = h("section", { class: "lw-panel lw-mode-" + this.mode, id: panelId, role: "region", "aria-label": "Chat: " + title, "data-state": "idle" }, [
      header,
      this.log,
      this.typingLine,
      form,
      this.drop,
    ]);
    this.panel.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape" && self.recording) {
        self.stopRecording(false); // Escape cancels a recording first
        return;
      }
      if (ev.key === "Escape" && self.mode === "launcher") {
        self.toggle(false);
      }
    });
    this.panel.addEventListener("paste", function (ev) {
      var files = ev.clipboardData && ev.clipboardData.files;
      if (files && files.length) {
        ev.preventDefault();
        self.addFiles(files);
      }
    });
    var depth = 0;
    this.panel.addEventListener("dragenter", function (ev) {
      if (!ev.dataTransfer || Array.prototype.indexOf.call(ev.dataTransfer.types, "Files") < 0) return;
      depth++;
      self.panel.classList.add("lw-dragging");
    });
    this.panel.addEventListener("dragleave", function () {
      depth = Math.max(0, depth - 1);
      if (!depth) self.panel.classList.remove("lw-dragging");
    });
    this.panel.addEventListener("dragover", function (ev) {
      ev.preventDefault();
    });
    this.panel.addEventListener("drop", function (ev) {
      ev.preventDefault();
      depth = 0;
      self.panel.classList.remove("lw-dragging");
      if (ev.dataTransfer && ev.dataTransfer.files.length) self.addFiles(ev.dataTransfer.files);
    });

    if (this.mode === "launcher") {
      this.launcher = h("button", { type: "button", class: "lw-launcher", "aria-label": "Open chat", "aria-expanded": "false", "aria-controls": panelId }, [
        icon("chat"),
        h("span", { class: "lw-badge", "aria-hidden": "true", hidden: true }),
      ]);
      this.launcher.addEventListener("click", function () {
        self.toggle();
      });
      this.panel.hidden = true;
      root.appendChild(h("div", { class: "lw-frame lw-floating" }, [this.panel, this.launcher]));
      document.body.appendChild(this.host);
      if (opts.open === "true" || opts.open === true) this.toggle(true);
    } else {
      root.appendChild(h("div", { class: "lw-frame lw-embedded" }, [this.panel]));
      inlineTarget.appendChild(this.host);
    }
  };

  Widget.prototype.toggle = function (open) {
    if (this.mode !== "launcher") return;
    var show = open === undefined ? this.panel.hidden : open;
    this.panel.hidden = !show;
    this.launcher.setAttribute("aria-expanded", String(show));
    this.launcher.setAttribute("aria-label", show ? "Close chat" : "Open chat");
    if (show) {
      this.unread = 0;
      this.updateBadge();
      this.scrollToBottom();
      this.input.focus();
    } else {
      this.launcher.focus();
    }
  };

  Widget.prototype.updateBadge = function () {
    if (!this.launcher) return;
    var badge = this.launcher.querySelector(".lw-badge");
    badge.hidden = !this.unread;
    badge.textContent = this.unread > 99 ? "99+" : String(this.unread || "");
  };

  Widget.prototype.autosize = function () {
    this.input.style.height = "auto";
    this.input.style.height = Math.min(this.input.scrollHeight, 160) + "px";
  };

  Widget.prototype.setState = function (state, text) {
    this.state = state;
    this.panel.setAttribute("data-state", state);
    this.statusText.textContent = text;
  };

  Widget.prototype.nearBottom = function () {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80;
  };

  Widget.prototype.scrollToBottom = function () {
    this.log.scrollTop = this.log.scrollHeight;
  };

  Widget.prototype.note = function (text, kind) {
    var stick = this.nearBottom();
    var el = h("div", { class: "lw-note lw-note-" + (kind || "info"), role: kind === "error" ? "alert" : null }, [text]);
    this.pendingBox.appendChild(el);
    if (stick) this.scrollToBottom();
    return el;
  };

  // ---------------------------------------------------------------- connection

  Widget.prototype.fetchToken = function () {
    var url = this.opts.tokenUrl;
    if (!url) return Promise.resolve(null);
    function read(resp) {
      if (!resp.ok) throw new Error("token endpoint answered " + resp.status);
      return resp.json().then(function (body) {
        if (!body || typeof body.token !== "string") throw new Error("token endpoint sent no token");
        return body.token;
      });
    }
    return fetch(url, { method: "POST", credentials: "same-origin" }).then(function (resp) {
      if (resp.status === 405) return fetch(url, { credentials: "same-origin" }).then(read);
      return read(resp);
    });
  };

  Widget.prototype.connect = function () {
    var self = this;
    clearTimeout(this.retryTimer);
    this.setState(this.attempt ? "reconnecting" : "connecting", this.attempt ? "Reconnecting…" : "Connecting…");
    var tokenReady = this.token || !this.opts.tokenUrl ? Promise.resolve(this.token) : this.fetchToken();
    tokenReady.then(
      function (token) {
        if (token && token === self.revokedToken) {
          self.end("This chat session was ended by the hub.");
          return;
        }
        self.token = token;
        self.open();
      },
      function (err) {
        self.retry("Could not sign in: " + err.message);
      }
    );
  };

  Widget.prototype.open = function () {
    var self = this;
    var ws;
    try {
      ws = new WebSocket(this.wsUrl);
    } catch (e) {
      this.retry("Cannot connect");
      return;
    }
    this.ws = ws;
    this.stats.connects++;
    ws.onopen = function () {
      var hello = { type: "hello", client: "lydian-web/" + VERSION };
      if (self.token) hello.token = self.token;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = function (ev) {
      if (ws !== self.ws) return;
      self.alive();
      var frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      self.stats.frames++;
      try {
        self.handle(frame);
      } catch (e) {
        if (window.console) console.error("lydian widget: failed to handle", frame && frame.type, e);
      }
    };
    ws.onclose = function (ev) {
      if (ws !== self.ws) return;
      self.ws = null;
      clearTimeout(self.watchdog);
      self.onClose(ev.code);
    };
  };

  /** What to do when the socket closes, by close code (docs/protocol.md, "Close codes"). */
  Widget.prototype.onClose = function (code) {
    if (this.state === "ended") return;
    if (code === 4401) this.token = null; // no hello in time or the token expired: a fresh one
    if (code === 4403) {
      // the token was revoked: never again with it; a fresh one from tokenUrl, or the end
      this.revokedToken = this.revokedToken || this.token;
      this.token = null;
      if (!this.opts.tokenUrl) {
        this.end("This chat session was ended by the hub.");
        return;
      }
    }
    var why = {
      1001: "The hub is restarting",
      1012: "The hub is restarting",
      1008: "Sending too fast",
      1013: "The hub is busy",
      4403: "Signed out",
      4429: "Connection too slow",
    }[code];
    this.retry(why || "Connection lost", code);
  };

  /** The session is over (revoked token, no way to get another): no more reconnecting. */
  Widget.prototype.end = function (text) {
    clearTimeout(this.retryTimer);
    clearTimeout(this.holdTimer);
    clearInterval(this.countdown);
    this.holdTimer = null;
    this.showSlowed(false);
    this.presence.clear();
    this.renderPresence();
    this.clearTyping();
    this.input.disabled = true;
    this.sendButton.disabled = true;
    this.setState("ended", text);
  };

  /** Reset the watchdog: a socket that hears nothing for 2.5 heartbeats is dead. */
  Widget.prototype.alive = function () {
    var self = this;
    clearTimeout(this.watchdog);
    if (!this.heartbeat) return;
    this.watchdog = setTimeout(function () {
      if (self.ws) self.ws.close(4000, "heartbeat missed");
    }, this.heartbeat * 2500);
  };

  Widget.prototype.retry = function (why, code) {
    var self = this;
    this.presence.clear();
    this.renderPresence();
    this.clearTyping();
    this.attempt++;
    var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, this.attempt - 1));
    if (code === 1013) ceiling = Math.max(ceiling * 4, BUSY_BACKOFF_MS * 2); // over a connection limit
    var delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2)); // "equal jitter"
    if (this.reconnectHint > 0) {
      // the hub said when (a reconnect frame before shutting down): then, plus jitter
      delay = Math.max(delay, Math.round(this.reconnectHint * 1000 * (1 + Math.random() / 2)));
      this.reconnectHint = 0;
    }
    this.stats.lastDelay = delay;
    var until = Date.now() + delay;
    this.setState("reconnecting", why + " · retrying in " + Math.ceil(delay / 1000) + " s");
    clearInterval(this.countdown);
    this.countdown = setInterval(function () {
      var left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      self.statusText.textContent = why + " · retrying in " + left + " s";
    }, 1000);
    this.retryTimer = setTimeout(function () {
      clearInterval(self.countdown);
      self.connect();
    }, delay);
  };

  Widget.prototype.send = function (frame) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    if (frame.id) {
      this.recent.set(frame.id, frame);
      if (this.recent.size > 64) this.recent.delete(this.recent.keys().next().value);
    }
    this.ws.send(JSON.stringify(frame));
    return true;
  };

  /** Send now, or, while the hub asked us to slow down, when it said we may (in order). */
  Widget.prototype.sendOrHold = function (frame) {
    if (this.holdTimer) {
      this.held.set(frame.id, frame);
      return false;
    }
    return this.send(frame);
  };

  /** ``rate_limited`` or ``store_unavailable``: resend the same frame (same id, so the hub
   * stores it once) after ``retry_after``. False when there is nothing to resend. */
  Widget.prototype.resendLater = function (f) {
    var wait = typeof f.retry_after === "number" && f.retry_after >= 0 ? f.retry_after : 1;
    if (!f.id) return true; // typing and the like: not worth repeating, nothing to show
    var frame = this.outbox.get(f.id) || this.recent.get(f.id);
    if (!frame || wait > MAX_WAIT_S) return false;
    var tries = (this.tries.get(f.id) || 0) + 1;
    if (tries > MAX_RESENDS) {
      this.tries.delete(f.id);
      return false;
    }
    this.tries.set(f.id, tries);
    if (this.tries.size > 64) this.tries.delete(this.tries.keys().next().value);
    this.held.set(f.id, frame);
    this.holdBack(wait);
    return true;
  };

  Widget.prototype.holdBack = function (seconds) {
    var self = this;
    var until = Date.now() + seconds * 1000;
    this.showSlowed(true);
    if (this.holdTimer && until <= this.holdUntil) return;
    clearTimeout(this.holdTimer);
    this.holdUntil = until;
    this.holdTimer = setTimeout(function () {
      self.releaseHold();
    }, Math.max(0, until - Date.now()));
  };

  Widget.prototype.releaseHold = function () {
    var self = this;
    this.holdTimer = null;
    var frames = Array.from(this.held.values());
    this.held.clear();
    frames.forEach(function (frame) {
      if (frame.type === "send" && !self.outbox.has(frame.id)) return; // settled meanwhile
      if (self.send(frame)) self.stats.resent++;
      // else: offline; an unacknowledged send goes out again after the reconnect
    });
    this.showSlowed(false);
  };

  /** The small "sending slowed down" mark while frames wait for the hub's retry_after. */
  Widget.prototype.showSlowed = function (on) {
    if (on && this.slowNote.hidden) this.stats.slowedDown++;
    this.slowNote.hidden = !on;
    this.panel.classList.toggle("lw-slowed", !!on);
  };

  // ---------------------------------------------------------------- frames

  Widget.prototype.handle = function (f) {
    switch (f.type) {
      case "ping":
        this.send({ type: "pong" });
        break;
      case "welcome":
        this.me = f.user;
        this.roles = f.roles || [];
        this.heartbeat = f.heartbeat_interval;
        this.alive();
        var join = { type: "join", room: this.room, id: this.nextId("j") };
        if (this.lastOffset !== null) {
          join.since = this.lastOffset;
          if (this.epoch) join.epoch = this.epoch;
        }
        this.stats.lastSince = join.since === undefined ? null : join.since;
        this.send(join);
        break;
      case "joined":
        this.onJoined(f);
        break;
      case "message":
        if (f.message.room === this.room) this.addMessage(f.message, true);
        break;
      case "history":
        this.onHistory(f);
        break;
      case "presence":
        if (f.status === "offline") this.presence.delete(f.user.id);
        else this.presence.set(f.user.id, f.user);
        this.renderPresence();
        break;
      case "typing":
        this.onTypingFrame(f);
        break;
      case "stream_start":
        this.streamFor(f.stream_id, f.agent, f.requested_by);
        break;
      case "stream_delta":
        this.onDelta(f);
        break;
      case "stream_end":
        this.endStream(f.stream_id, f.message, f.cancelled ? "Stopped" : null);
        break;
      case "stream_error":
        this.endStream(f.stream_id, f.message, null);
        this.note("The answer failed: " + f.detail, "error");
        break;
      case "ack":
        this.settle(f.id);
        break;
      case "attachment":
        this.onAttachment(f);
        break;
      case "command_result":
        this.note((f.ok ? "" : "⚠ ") + f.text, f.ok ? "info" : "error").classList.add("lw-command");
        break;
      case "event":
        this.note(f.detail, "info");
        break;
      case "error":
        this.onError(f);
        break;
      case "reconnect":
        // the hub is going away (close 1001 follows): come back after retry_after, plus jitter
        this.reconnectHint = typeof f.retry_after === "number" ? f.retry_after : 0;
        break;
    }
  };

  Widget.prototype.onJoined = function (f) {
    this.stats.joins++;
    this.fetchRoomInfo();
    this.stats.replayed += f.replayed || 0;
    this.attempt = 0;
    this.setState("online", "Connected");
    var fresh = this.lastOffset === null || f.recovered === false || (this.epoch && this.epoch !== f.epoch);
    this.epoch = f.epoch;
    if (fresh && this.lastOffset !== null) this.clearMessages();
    this.presence.clear();
    var self = this;
    (f.presence || []).forEach(function (p) {
      self.presence.set(p.user.id, p.user);
    });
    this.renderPresence();
    // streams running now: take their text so far; the others ended while we were away
    // and their final messages arrive with the replay
    var live = new Set();
    (f.streams || []).forEach(function (s) {
      live.add(s.stream_id);
      var st = self.streamFor(s.stream_id, s.agent, s.requested_by);
      if (s.seq > st.seq) {
        st.seq = s.seq;
        st.text = s.text;
        self.renderStream(st);
        self.speechFollows(st.id, st.text);
      }
    });
    this.streams.forEach(function (st, id) {
      if (!live.has(id)) {
        self.dropStream(id);
        self.speechFollows(id, null, null); // ended while away: a reading ends with what it had
      }
    });
    if (fresh) {
      this.hasMore = true;
      this.oldest = null;
      this.requestHistory(null);
    }
    // attachment frames are live only: whatever was in progress is read again from the hub
    this.atts.forEach(function (st, id) {
      if (self.busyHandlers(st)) self.refreshAttachment(id);
    });
    // sends that were not acknowledged before the drop: the same id makes them idempotent
    this.outbox.forEach(function (frame) {
      self.sendOrHold(frame);
    });
  };

  Widget.prototype.clearMessages = function () {
    this.messages.clear();
    this.list.textContent = "";
    this.lastOffset = null;
    this.oldest = null;
  };

  Widget.prototype.requestHistory = function (before) {
    var frame = { type: "history", room: this.room, limit: HISTORY_PAGE, id: this.nextId("h") };
    if (before !== null) frame.before = before;
    this.loadingOlder = true;
    this.older.textContent = "Loading…";
    this.send(frame);
  };

  Widget.prototype.loadOlder = function () {
    if (this.loadingOlder || !this.hasMore || this.oldest === null || this.state !== "online") return;
    if (this.oldest <= 1) {
      this.hasMore = false;
      return;
    }
    this.requestHistory(this.oldest);
  };

  Widget.prototype.onHistory = function (f) {
    if (f.room !== this.room) return;
    var before = this.log.scrollHeight - this.log.scrollTop;
    var first = this.oldest === null;
    var self = this;
    f.messages.forEach(function (m) {
      self.addMessage(m, false);
    });
    this.hasMore = f.has_more;
    this.loadingOlder = false;
    this.older.textContent = this.hasMore ? "" : "This is the beginning of the room.";
    this.panel.classList.toggle("lw-at-start", !this.hasMore);
    if (first) this.scrollToBottom();
    else this.log.scrollTop = this.log.scrollHeight - before; // keep what the reader was looking at
    // fill the panel: keep loading while there is no scrollbar yet
    if (this.hasMore && this.log.scrollHeight <= this.log.clientHeight + 10) this.loadOlder();
  };

  Widget.prototype.onError = function (f) {
    if (f.code === "auth_failed" || f.code === "token_expired") {
      this.token = null; // the reconnect fetches a fresh one from tokenUrl (or comes as a guest)
      if (this.ws) this.ws.close(4000, f.code);
      return;
    }
    if (f.code === "token_revoked") {
      this.revokedToken = this.token; // the hub closes with 4403 next
      this.token = null;
      return;
    }
    if ((f.code === "rate_limited" || f.code === "store_unavailable") && this.resendLater(f)) return;
    if (f.id && this.outbox.has(f.id)) {
      this.settle(f.id);
      this.note("Not sent: " + f.detail, "error");
      return;
    }
    var ref = f.id || "";
    if (ref.indexOf("h-") === 0) this.loadingOlder = false;
    if (ref.indexOf("j-") === 0) {
      this.setState("offline", f.detail); // unknown or private room: retrying will not help
    } else if (ref.indexOf("c-") === 0) {
      this.streams.forEach(function (st) {
        if (st.cancelRef === ref) st.resetStop();
      });
      this.note("Could not stop the answer: " + f.detail, "error");
      return;
    }
    this.note(f.detail, "error");
  };

  // ---------------------------------------------------------------- messages

  Widget.prototype.addMessage = function (m, live) {
    if (this.messages.has(m.offset)) {
      this.stats.duplicatesDropped++;
      return;
    }
    if (m.client_id && this.outbox.has(m.client_id) && this.me && m.user.id === this.me.id) this.settle(m.client_id);
    var stick = this.nearBottom();
    var el = this.renderMessage(m);
    this.messages.set(m.offset, el);
    // insert in offset order (almost always at the end)
    var next = null;
    for (var node = this.list.lastElementChild; node; node = node.previousElementSibling) {
      if (Number(node.getAttribute("data-offset")) < m.offset) break;
      next = node;
    }
    this.list.insertBefore(el, next);
    this.regroup(el);
    if (el.nextElementSibling) this.regroup(el.nextElementSibling);
    if (this.lastOffset === null || m.offset > this.lastOffset) this.lastOffset = m.offset;
    if (this.oldest === null || m.offset < this.oldest) this.oldest = m.offset;
    if (live) {
      if (stick || (this.me && m.user.id === this.me.id)) this.scrollToBottom();
      if (this.mode === "launcher" && this.panel.hidden && !(this.me && m.user.id === this.me.id)) {
        this.unread = (this.unread || 0) + 1;
        this.updateBadge();
      }
    }
  };

  /** Consecutive messages of one author within a few minutes share one header. */
  Widget.prototype.regroup = function (el) {
    var prev = el.previousElementSibling;
    var same =
      prev &&
      prev.getAttribute("data-user") === el.getAttribute("data-user") &&
      Number(el.getAttribute("data-ts")) - Number(prev.getAttribute("data-ts")) < GROUP_GAP_S &&
      el.getAttribute("data-kind") !== "system";
    el.classList.toggle("lw-cont", !!same);
  };

  Widget.prototype.renderMessage = function (m, extraLabel) {
    var mine = this.me && m.user.id === this.me.id;
    var kind = m.kind || "user";
    var el = h("article", {
      class: "lw-msg lw-kind-" + kind + (mine ? " lw-mine" : ""),
      "data-offset": m.offset,
      "data-user": m.user.id,
      "data-ts": m.ts,
      "data-kind": kind,
      "aria-label": m.user.name + ", " + formatTime(m.ts),
    });
    var meta = h("div", { class: "lw-meta" }, [
      h("span", { class: "lw-author", text: mine ? m.user.name + " (you)" : m.user.name }),
      kind === "agent" ? h("span", { class: "lw-tag", text: "AI" }) : null,
      m.user.guest ? h("span", { class: "lw-tag lw-tag-guest", title: "anonymous guest, not a member", text: "guest" }) : null,
      h("time", { datetime: new Date(m.ts * 1000).toISOString(), title: new Date(m.ts * 1000).toLocaleString(), text: formatTime(m.ts) }),
    ]);
    var body = h("div", { class: "lw-body" }, [meta]);
    if (m.text) body.appendChild(h("div", { class: "lw-text" }, [renderMarkdown(m.text)]));
    if (kind === "agent" && m.text && m.text.trim()) {
      el._lwText = m.text; // what a reading aloud reads
      meta.appendChild(playButton(this, el));
    }
    var label = extraLabel || (m.meta && m.meta.cancelled ? "Stopped" : m.meta && m.meta.error ? "Answer interrupted" : null);
    if (label) body.appendChild(h("div", { class: "lw-flag", text: label }));
    if (m.attachments && m.attachments.length) {
      body.appendChild(this.renderAttachments(m.attachments));
      body.appendChild(this.renderProcessing(m.attachments));
    }
    el.appendChild(avatar(m.user));
    el.appendChild(body);
    return el;
  };

  Widget.prototype.renderAttachments = function (items) {
    var self = this;
    var box = h("div", { class: "lw-atts" });
    items.forEach(function (a) {
      var url = safeHref(a.url, self.hub + "/");
      if (!url) return;
      var kind = String(a.media_type).split("/")[0];
      if (kind === "image") {
        // the hub may hold the original back (being reviewed: 423, withheld: 451): the image
        // then fails to load and says why, and is loaded again when its review ends
        var link = h("a", { class: "lw-att lw-att-image", href: url, target: "_blank", rel: "noopener noreferrer", "data-att-image": a.id });
        var img = h("img", { src: url, alt: a.name, loading: "lazy" });
        img.addEventListener("error", function () {
          self.holdImage(link, a.id);
        });
        img.addEventListener("load", function () {
          link.classList.remove("lw-att-held");
          var note = link.querySelector(".lw-att-note");
          if (note) note.remove();
        });
        link.appendChild(img);
        box.appendChild(link);
      } else if (kind === "audio") {
        box.appendChild(
          h("figure", { class: "lw-att lw-att-audio" }, [
            h("audio", { controls: true, preload: "none", src: url, "aria-label": a.name }),
            h("figcaption", { text: a.name }),
          ])
        );
      } else {
        box.appendChild(
          h("a", { class: "lw-att lw-att-file", href: url, download: a.name, target: "_blank", rel: "noopener noreferrer" }, [
            icon("file"),
            h("span", { class: "lw-file-name", text: a.name }),
            h("span", { class: "lw-file-size", text: formatSize(a.size) }),
          ])
        );
      }
    });
    return box;
  };

  /** An image the hub did not serve: why, from its jobs (withheld, being reviewed). */
  Widget.prototype.holdImage = function (link, id) {
    var st = this.atts.get(id);
    var why = "Image not available";
    if (st) {
      Array.from(st.jobs.values()).forEach(function (job) {
        var r = job.result || {};
        var withheld = (typeof r.withhold === "string" && r.withhold) || job.withheld;
        if (withheld) why = "Withheld: " + withheld;
        else if (BUSY[job.status] && job.review && why.indexOf("Withheld") !== 0) why = "Being reviewed…";
        else if (job.status === "failed" && job.review && why.indexOf("Withheld") !== 0) why = "Withheld: the review failed";
      });
    }
    link.classList.add("lw-att-held");
    var note = link.querySelector(".lw-att-note");
    if (!note) {
      note = h("span", { class: "lw-att-note" });
      link.appendChild(note);
    }
    note.textContent = why;
  };

  /** Load an attachment's images again (a review ended: the hub may serve it, or a copy). */
  Widget.prototype.reloadImages = function (id) {
    var self = this;
    var links = this.list.querySelectorAll('a[data-att-image="' + CSS.escape(id) + '"]');
    Array.prototype.forEach.call(links, function (link) {
      var img = link.querySelector("img");
      if (!img) return;
      var base = link.getAttribute("href");
      self.imageLoads = (self.imageLoads || 0) + 1;
      img.src = base + (base.indexOf("?") < 0 ? "?" : "&") + "v=" + self.imageLoads;
    });
  };

  // ---------------------------------------------------------------- attachment processing

  var PREVIEW_CHARS = 20000; // the preview shows this much of the extracted text; copy takes all
  var BUSY = { queued: "Waiting to be processed…", running: "Processing…" };
  var REVIEWING = "Being reviewed…"; // a reviewer's job: the original is not shown meanwhile

  /** Copy ``text``: the async clipboard API, else a hidden textarea and execCommand("copy"). */
  function copyText(text) {
    function fallback() {
      var area = h("textarea", { readonly: true, "aria-hidden": "true" });
      area.value = text;
      area.style.cssText = "position:fixed;top:0;left:0;width:1px;height:1px;opacity:0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (e) {
        ok = false;
      }
      area.remove();
      return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
    }
    if (navigator.clipboard && navigator.clipboard.writeText) return navigator.clipboard.writeText(text).catch(fallback);
    return fallback();
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  /** What a result's ``data`` says worth a badge: pages, tables, faces (counts only). */
  function resultFacts(data) {
    var facts = [];
    if (typeof data.pages === "number" && data.pages > 0) facts.push({ text: plural(data.pages, "page") });
    var tables = Array.isArray(data.tables) ? data.tables.length : typeof data.tables === "number" ? data.tables : 0;
    if (tables > 0) facts.push({ text: plural(tables, "table") });
    var faces = data.faces && typeof data.faces === "object" ? data.faces : {};
    var count = typeof data.faces === "number" ? data.faces : typeof faces.count === "number" ? faces.count : null;
    if (count !== null) facts.push({ text: plural(count, "face") });
    if (data.faces_blurred === true || faces.blurred === true || data.blurred === true) {
      facts.push({ text: "faces blurred", cls: "lw-proc-blurred" });
    }
    return facts;
  }

  /** What the room is shown instead of the original, from a job's frame or stored result:
   * "withheld" (the reason as its title) or "copy shown" (a replacement is served). */
  function shownFacts(job, facts) {
    var r = job.result || {};
    var out = [];
    var withheld = (typeof r.withhold === "string" && r.withhold) || job.withheld;
    if (withheld) out.push({ text: "withheld", cls: "lw-proc-withheld", title: withheld });
    var files = Array.isArray(r.files) ? r.files : [];
    var replaced = !!job.replacement || files.some(function (f) {
      return f && f.role === "replacement";
    });
    var blurred = facts.some(function (f) {
      return f.cls === "lw-proc-blurred";
    });
    if (replaced && !withheld && !blurred) out.push({ text: "copy shown", cls: "lw-proc-replaced" });
    return out;
  }

  /** OCR text in a result's ``data`` (``ocr_text``, or ``ocr.text``), else "". */
  function ocrText(data) {
    if (typeof data.ocr_text === "string") return data.ocr_text;
    if (data.ocr && typeof data.ocr === "object" && typeof data.ocr.text === "string") return data.ocr.text;
    return "";
  }

  var PAGE_MARK = /^\s*<!--\s*page\s+(\d{1,6})\s*-->\s*$/i;
  var HEADING = /^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$/;
  var TABLE_ROW = /^\s{0,3}\|.*\|\s*$/;
  var TABLE_RULE = /^\s{0,3}\|(\s*:?-{2,}:?\s*\|)+\s*$/;

  function tableCells(line) {
    var cells = [];
    var cell = "";
    var body = line.trim().slice(1, -1);
    for (var i = 0; i < body.length; i++) {
      if (body[i] === "\\" && body[i + 1] === "|") {
        cell += "|";
        i++;
      } else if (body[i] === "|") {
        cells.push(cell.trim());
        cell = "";
      } else cell += body[i];
    }
    cells.push(cell.trim());
    return cells;
  }

  /** Extracted markdown as DOM: the message subset plus what documents carry (page marks,
   * headings, tables), each cell and heading through ``inline``: text nodes, never HTML. */
  function renderPreview(text) {
    var frag = document.createDocumentFragment();
    var lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    var rest = [];
    var fence = null;
    function flush() {
      if (rest.length) frag.appendChild(renderMarkdown(rest.join("\n")));
      rest = [];
    }
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      var open = /^\s{0,3}(```+|~~~+)/.exec(line);
      if (fence) {
        if (line.trim().indexOf(fence) === 0) fence = null;
        rest.push(line);
        continue;
      }
      if (open) {
        fence = open[1];
        rest.push(line);
        continue;
      }
      var m;
      if ((m = PAGE_MARK.exec(line))) {
        flush();
        frag.appendChild(h("div", { class: "lw-proc-page", text: "Page " + m[1] }));
      } else if (line.length <= 500 && (m = HEADING.exec(line))) {
        flush();
        var head = h("div", { class: "lw-proc-h lw-proc-h" + m[1].length, role: "heading", "aria-level": String(m[1].length + 2) });
        inline(m[2], head);
        frag.appendChild(head);
      } else if (TABLE_ROW.test(line)) {
        flush();
        var table = h("table", { class: "lw-proc-table" });
        var first = true;
        for (; i < lines.length && TABLE_ROW.test(lines[i]); i++) {
          if (TABLE_RULE.test(lines[i])) continue;
          var tr = h("tr");
          tableCells(lines[i]).forEach(function (cell) {
            var td = h(first ? "th" : "td");
            inline(cell, td);
            tr.appendChild(td);
          });
          table.appendChild(tr);
          first = false;
        }
        i--;
        frag.appendChild(h("div", { class: "lw-proc-scroll" }, [table]));
      } else rest.push(line);
    }
    flush();
    return frag;
  }

  /** The processing state of one attachment: its handlers' jobs, where it is shown. */
  Widget.prototype.attState = function (id) {
    var st = this.atts.get(id);
    if (!st) {
      st = { id: id, jobs: new Map(), stale: true, fetching: false, shown: false };
      this.atts.set(id, st);
    }
    return st;
  };

  Widget.prototype.busyHandlers = function (st) {
    return Array.from(st.jobs.values()).some(function (job) {
      return !!BUSY[job.status];
    });
  };

  /** An ``attachment`` frame: one handler's job went queued, running, done or failed. */
  Widget.prototype.onAttachment = function (f) {
    if (f.room !== this.room || typeof f.attachment !== "string" || typeof f.handler !== "string") return;
    var st = this.attState(f.attachment);
    st.jobs.set(f.handler, {
      handler: f.handler,
      status: String(f.status),
      summary: f.summary || "",
      error: f.error || "",
      cached: !!f.cached,
      review: !!f.review,
      withheld: typeof f.withheld === "string" ? f.withheld : "",
      replacement: typeof f.replacement === "string" ? f.replacement : "",
      joins: this.stats.joins,
      result: null,
    });
    if (f.status === "done") this.refreshAttachment(f.attachment); // its text: from the results route
    var ended = f.status === "done" || f.status === "failed";
    if (ended && (f.review || f.withheld || f.replacement)) this.reloadImages(f.attachment);
    var self = this;
    var held = this.list.querySelectorAll('a.lw-att-held[data-att-image="' + CSS.escape(f.attachment) + '"]');
    Array.prototype.forEach.call(held, function (link) {
      self.holdImage(link, f.attachment); // say why it is not shown, as the jobs go on
    });
    this.paintAttachment(f.attachment);
  };

  /** Read the stored results of an attachment (now if it is shown, else once it scrolls in). */
  Widget.prototype.refreshAttachment = function (id) {
    var self = this;
    var st = this.attState(id);
    st.stale = true;
    if (!st.shown || st.fetching) return; // shown later: fetched then; fetching: again after
    st.fetching = true;
    st.stale = false;
    var joins = this.stats.joins;
    var url = this.hub + "/api/rooms/" + encodeURIComponent(this.room) + "/attachments/" + encodeURIComponent(id) + "/results";
    fetch(url, { headers: this.token ? { Authorization: "Bearer " + this.token } : {} })
      .then(function (resp) {
        if (!resp.ok) throw new Error("results answered " + resp.status);
        return resp.json();
      })
      .then(function (body) {
        self.mergeResults(st, body && Array.isArray(body.results) ? body.results : [], joins);
      })
      .catch(function () {}) // the frames' summary and error still show
      .then(function () {
        st.fetching = false;
        if (st.stale) self.refreshAttachment(id);
        self.paintAttachment(id);
      });
  };

  Widget.prototype.mergeResults = function (st, results, joins) {
    results.forEach(function (r) {
      if (!r || typeof r.handler !== "string" || (r.status !== "done" && r.status !== "failed")) return;
      var job = st.jobs.get(r.handler);
      // a job seen running on this connection is newer than what was stored before it
      if (job && BUSY[job.status] && job.joins >= joins) return;
      st.jobs.set(r.handler, {
        handler: r.handler,
        status: r.status,
        summary: typeof r.summary === "string" ? r.summary : "",
        error: typeof r.error === "string" ? r.error : "",
        cached: job ? job.cached : false,
        review: job ? job.review : false,
        withheld: "",
        replacement: "",
        joins: joins,
        result: r,
      });
    });
  };

  /** The processing boxes under a message's attachments (empty until there is news). */
  Widget.prototype.renderProcessing = function (items) {
    var self = this;
    var box = h("div", { class: "lw-procs" });
    items.forEach(function (a) {
      if (!a || typeof a.id !== "string") return;
      var el = h("div", { class: "lw-proc", "data-attachment": a.id, "aria-live": "polite", "aria-label": "Processing of " + a.name });
      box.appendChild(el);
      self.fillProcessing(el, self.atts.get(a.id));
      self.watchAttachment(el, a.id);
    });
    return box;
  };

  /** Fetch an attachment's results when its box first comes into view (lazy for history). */
  Widget.prototype.watchAttachment = function (el, id) {
    var self = this;
    var seen = function (attId) {
      var st = self.attState(attId);
      if (st.shown) return;
      st.shown = true;
      if (st.stale) self.refreshAttachment(attId);
    };
    if (typeof IntersectionObserver !== "function") {
      seen(id);
      return;
    }
    if (!this.attObserver) {
      this.attObserver = new IntersectionObserver(function (entries) {
        entries.forEach(function (entry) {
          if (!entry.isIntersecting) return;
          self.attObserver.unobserve(entry.target);
          seen(entry.target.getAttribute("data-attachment"));
        });
      }, { root: this.log, rootMargin: "200px 0px" });
    }
    this.attObserver.observe(el);
  };

  Widget.prototype.paintAttachment = function (id) {
    var self = this;
    var st = this.atts.get(id);
    var boxes = this.list.querySelectorAll('.lw-proc[data-attachment="' + CSS.escape(id) + '"]');
    var stick = this.nearBottom();
    Array.prototype.forEach.call(boxes, function (el) {
      self.fillProcessing(el, st);
    });
    if (stick && boxes.length) this.scrollToBottom();
  };

  Widget.prototype.fillProcessing = function (el, st) {
    var self = this;
    var open = {}; // keep open previews open across repaints
    Array.prototype.forEach.call(el.querySelectorAll("details[open]"), function (d) {
      open[d.getAttribute("data-handler")] = true;
    });
    el.textContent = "";
    if (!st) return;
    Array.from(st.jobs.keys())
      .sort()
      .forEach(function (name) {
        el.appendChild(self.renderJob(st.jobs.get(name), !!open[name]));
      });
  };

  Widget.prototype.renderJob = function (job, open) {
    var item = h("div", { class: "lw-proc-item lw-proc-" + job.status, "data-handler": job.handler, "data-status": job.status });
    var tag = h("span", { class: "lw-proc-handler", text: job.handler });
    if (BUSY[job.status]) {
      item.setAttribute("aria-busy", "true");
      var state = job.review ? REVIEWING : BUSY[job.status];
      item.appendChild(h("div", { class: "lw-proc-head" }, [h("span", { class: "lw-spinner", "aria-hidden": "true" }), h("span", { class: "lw-proc-state", text: state }), tag]));
      return item;
    }
    if (job.status !== "done") {
      item.appendChild(
        h("div", { class: "lw-proc-head" }, [h("span", { class: "lw-proc-state", text: "Could not process:" }), h("span", { class: "lw-proc-error", text: job.error || "unknown error" }), tag])
      );
      return item;
    }
    var r = job.result || {};
    var data = r.data && typeof r.data === "object" ? r.data : {};
    var head = h("div", { class: "lw-proc-head" }, [h("span", { class: "lw-proc-summary", text: job.summary || "Processed" }), tag]);
    item.appendChild(head);
    var facts = resultFacts(data);
    facts = facts.concat(shownFacts(job, facts));
    if (facts.length) {
      item.appendChild(
        h(
          "div",
          { class: "lw-proc-facts" },
          facts.map(function (f) {
            return h("span", { class: "lw-proc-badge " + (f.cls || ""), text: f.text, title: f.title });
          })
        )
      );
    }
    var text = typeof r.markdown === "string" ? r.markdown : "";
    var ocr = ocrText(data);
    if (job.handler === "transcript" && text.trim()) {
      // a voice message's transcript is short and is what the message says: shown at once
      item.appendChild(h("p", { class: "lw-proc-transcript", lang: typeof data.language === "string" && data.language ? data.language : null, text: text.trim() }));
      item.appendChild(h("div", { class: "lw-proc-actions" }, [copyButton(text)]));
      return item;
    }
    if (!text.trim() && !ocr.trim()) return item;
    var body = h("div", { class: "lw-proc-body" });
    var details = h("details", { class: "lw-proc-preview", "data-handler": job.handler }, [h("summary", { text: ocr && !text ? "OCR text" : "Preview" }), body]);
    var filled = false;
    var fill = function () {
      if (filled) return;
      filled = true;
      if (text.trim()) {
        // the safe markdown subset: DOM nodes and text only, never HTML
        body.appendChild(h("div", { class: "lw-proc-text" }, [renderPreview(text.slice(0, PREVIEW_CHARS))]));
        if (text.length > PREVIEW_CHARS) body.appendChild(h("div", { class: "lw-proc-more", text: "… the preview ends here; Copy text takes all of it" }));
      }
      if (ocr.trim() && ocr !== text) {
        body.appendChild(h("div", { class: "lw-proc-label", text: "OCR text" }));
        body.appendChild(h("pre", { class: "lw-proc-ocr", text: ocr.slice(0, PREVIEW_CHARS) }));
      }
    };
    details.addEventListener("toggle", function () {
      if (details.open) fill();
    });
    if (open) {
      details.open = true;
      fill();
    }
    item.appendChild(details);
    item.appendChild(h("div", { class: "lw-proc-actions" }, [copyButton(text.trim() ? text : ocr)]));
    return item;
  };

  /** A "Copy text" button for ``text`` (says "Copied" for a moment). */
  function copyButton(text) {
    var copy = h("button", { type: "button", class: "lw-proc-copy", "aria-label": "Copy the extracted text" }, ["Copy text"]);
    var reset;
    copy.addEventListener("click", function () {
      clearTimeout(reset);
      copyText(text).then(
        function () {
          copy.textContent = "Copied";
        },
        function () {
          copy.textContent = "Copy failed";
        }
      );
      reset = setTimeout(function () {
        copy.textContent = "Copy text";
      }, 2500);
    });
    return copy;
  }

  // ---------------------------------------------------------------- streamed answers

  /** Who may stop an answer: the member who asked and admins (the hub checks it again). */
  Widget.prototype.mayStop = function (requestedBy) {
    if (!requestedBy || !this.me) return true;
    var me = this.me.id;
    return requestedBy === me || this.roomOwner === me || (this.roles || []).indexOf("admin") >= 0;
  };

  /** Learn the room's owner (who may stop any answer in it); without it, asker and admins. */
  Widget.prototype.fetchRoomInfo = function () {
    var self = this;
    if (this.roomOwner !== undefined || !this.token) return;
    this.roomOwner = null;
    var url = this.hub + "/api/rooms/" + encodeURIComponent(this.room);
    fetch(url, { headers: { Authorization: "Bearer " + this.token } })
      .then(function (resp) {
        return resp.ok ? resp.json() : null;
      })
      .then(function (info) {
        if (!info || typeof info.created_by !== "string") return;
        self.roomOwner = info.created_by;
        self.streams.forEach(function (st) {
          st.stop.hidden = !self.mayStop(st.requestedBy);
        });
      })
      .catch(function () {});
  };

  Widget.prototype.streamFor = function (id, agent, requestedBy) {
    var st = this.streams.get(id);
    if (st) return st;
    var self = this;
    agent = agent || { id: "agent", name: "Assistant" };
    var text = h("div", { class: "lw-text" });
    var stop = h("button", { type: "button", class: "lw-stop", "aria-label": "Stop this answer", hidden: !this.mayStop(requestedBy) }, [icon("stop"), "Stop"]);
    var meta = h("div", { class: "lw-meta" }, [h("span", { class: "lw-author", text: agent.name }), h("span", { class: "lw-tag", text: "AI" }), h("span", { class: "lw-live", text: "answering…" })]);
    var el = h("article", { class: "lw-msg lw-kind-agent lw-streaming", "data-stream": id, "aria-busy": "true", "aria-label": agent.name + " is answering" }, [
      avatar(agent),
      h("div", { class: "lw-body" }, [
        meta,
        text,
        h("div", { class: "lw-stream-actions" }, [stop]),
      ]),
    ]);
    meta.appendChild(playButton(this, el)); // read aloud as it streams
    st = { id: id, el: el, textEl: text, text: "", seq: 0, agent: agent, stop: stop, cancelRef: null, requestedBy: requestedBy };
    st.resetStop = function () {
      stop.disabled = false;
      stop.lastChild.textContent = "Stop";
    };
    stop.addEventListener("click", function () {
      stop.disabled = true;
      stop.lastChild.textContent = "Stopping…";
      st.cancelRef = self.nextId("c");
      self.send({ type: "cancel", room: self.room, stream_id: id, id: st.cancelRef });
    });
    this.streams.set(id, st);
    var stick = this.nearBottom();
    this.streamBox.appendChild(el);
    this.renderStream(st);
    if (stick) this.scrollToBottom();
    return st;
  };

  Widget.prototype.onDelta = function (f) {
    if (f.room !== this.room) return;
    var st = this.streamFor(f.stream_id, null);
    if (f.seq <= st.seq) return; // already seen (e.g. in the snapshot after a reconnect)
    st.seq = f.seq;
    st.text += f.text;
    var stick = this.nearBottom();
    this.renderStream(st);
    this.speechFollows(st.id, st.text);
    if (stick) this.scrollToBottom();
  };

  Widget.prototype.renderStream = function (st) {
    st.textEl.textContent = "";
    st.textEl.appendChild(renderMarkdown(st.text));
    var cursor = h("span", { class: "lw-cursor", "aria-hidden": "true" });
    var last = st.textEl.lastElementChild;
    while (last && (last.tagName === "UL" || last.tagName === "OL")) last = last.lastElementChild;
    if (last && last.tagName === "PRE") last = last.firstElementChild;
    (last || st.textEl).appendChild(cursor);
  };

  Widget.prototype.dropStream = function (id) {
    var st = this.streams.get(id);
    if (!st) return;
    st.el.remove();
    this.streams.delete(id);
  };

  Widget.prototype.endStream = function (id, message, label) {
    this.dropStream(id);
    var final = null;
    if (message && message.room === this.room) {
      if (label) {
        message = Object.assign({}, message, { meta: Object.assign({}, message.meta || {}, { cancelled: true }) });
      }
      this.addMessage(message, true);
      final = this.messages.get(message.offset) || null;
    }
    // a reading of the stream goes on with the final text (or ends with what it had)
    this.speechFollows(id, message && typeof message.text === "string" ? message.text : null, final);
  };

  // ---------------------------------------------------------------- presence and typing

  Widget.prototype.renderPresence = function () {
    var self = this;
    var users = Array.from(this.presence.values());
    users.sort(function (a, b) {
      return a.name.localeCompare(b.name);
    });
    this.presenceList.textContent = "";
    users.slice(0, 5).forEach(function (u) {
      var me = self.me && u.id === self.me.id;
      var li = h("li", { class: "lw-person", title: u.name + (me ? " (you)" : ""), "data-user": u.id }, [avatar(u, "lw-avatar-sm"), h("span", { class: "lw-sr", text: u.name + (me ? " (you)" : "") })]);
      self.presenceList.appendChild(li);
    });
    this.presenceCount.textContent = users.length ? users.length + " online" : "";
    this.presenceList.setAttribute("aria-label", "Online now: " + users.map(function (u) { return u.name; }).join(", "));
  };

  Widget.prototype.onTypingFrame = function (f) {
    if (f.room !== this.room || (this.me && f.user.id === this.me.id)) return;
    var self = this;
    var entry = this.typing.get(f.user.id);
    if (entry) clearTimeout(entry.timer);
    if (f.active) {
      this.typing.set(f.user.id, {
        user: f.user,
        timer: setTimeout(function () {
          self.typing.delete(f.user.id);
          self.renderTyping();
        }, TYPING_SHOW_MS),
      });
    } else this.typing.delete(f.user.id);
    this.renderTyping();
  };

  Widget.prototype.clearTyping = function () {
    this.typing.forEach(function (e) {
      clearTimeout(e.timer);
    });
    this.typing.clear();
    this.renderTyping();
  };

  Widget.prototype.renderTyping = function () {
    var names = Array.from(this.typing.values()).map(function (e) {
      return e.user.name;
    });
    this.typingLine.textContent = "";
    if (!names.length) return;
    var text =
      names.length === 1 ? names[0] + " is typing…" : names.length === 2 ? names[0] + " and " + names[1] + " are typing…" : names.length + " people are typing…";
    this.typingLine.appendChild(h("span", { class: "lw-dots", "aria-hidden": "true" }, [h("i"), h("i"), h("i")]));
    this.typingLine.appendChild(document.createTextNode(text));
  };

  Widget.prototype.onTyping = function () {
    var now = Date.now();
    if (!this.input.value.trim()) {
      this.stopTyping();
      return;
    }
    if (now - this.lastTypingSent > TYPING_RESEND_MS) {
      this.lastTypingSent = now;
      this.send({ type: "typing", room: this.room, active: true });
    }
  };

  Widget.prototype.stopTyping = function () {
    if (!this.lastTypingSent) return;
    this.lastTypingSent = 0;
    this.send({ type: "typing", room: this.room, active: false });
  };

  // ---------------------------------------------------------------- composing and sending

  Widget.prototype.submit = function () {
    var text = this.input.value;
    var ready = this.uploads.filter(function (u) {
      return u.attachment;
    });
    if (this.uploads.some(function (u) { return u.busy; })) {
      this.note("Wait for the upload to finish.", "info");
      return;
    }
    if (!text.trim() && !ready.length) return;
    var id = this.nextId("m");
    var frame;
    if (/^\/\w/.test(text.trim()) && !ready.length) {
      frame = { type: "command", room: this.room, text: text.trim(), id: id };
      this.send(frame) || this.note("Offline: the command was not sent.", "error");
    } else {
      frame = { type: "send", room: this.room, text: text.trim() ? text : "", id: id };
      if (ready.length) frame.attachments = ready.map(function (u) { return u.attachment.id; });
      this.outbox.set(id, frame);
      this.showPending(id, frame, ready);
      this.sendOrHold(frame); // if offline, it goes out after the reconnect
    }
    this.lastTypingSent = 0;
    this.input.value = "";
    this.uploads = [];
    this.renderChips();
    this.autosize();
    this.input.focus();
  };

  Widget.prototype.showPending = function (id, frame, uploads) {
    var el = h("div", { class: "lw-msg lw-mine lw-ghost", "data-pending": id, "aria-label": "Sending" }, [
      h("div", { class: "lw-body" }, [
        h("div", { class: "lw-meta" }, [h("span", { class: "lw-author", text: "Sending…" })]),
        frame.text ? h("div", { class: "lw-text" }, [renderMarkdown(frame.text)]) : null,
        uploads.length ? h("div", { class: "lw-text", text: uploads.map(function (u) { return "📎 " + u.name; }).join("  ") }) : null,
      ]),
    ]);
    this.pendingBox.appendChild(el);
    this.scrollToBottom();
  };

  Widget.prototype.settle = function (id) {
    this.outbox.delete(id);
    this.held.delete(id);
    this.tries.delete(id);
    var ghost = this.pendingBox.querySelector('[data-pending="' + CSS.escape(id) + '"]');
    if (ghost) ghost.remove();
  };

  Widget.prototype.addFiles = function (files) {
    var self = this;
    Array.prototype.forEach.call(files, function (file) {
      var up = { name: file.name || "pasted file", busy: true, attachment: null, error: null };
      self.uploads.push(up);
      var slowed = function () {
        up.slowed = true;
        self.renderChips();
      };
      self.upload(file, slowed).then(
        function (att) {
          up.busy = false;
          up.attachment = att;
          self.renderChips();
        },
        function (err) {
          up.busy = false;
          up.error = err.message;
          self.renderChips();
        }
      );
    });
    this.renderChips();
  };

  /** Seconds from a Retry-After header (seconds or an HTTP date); null when absent. */
  function retryAfter(value) {
    if (!value) return null;
    if (/^\s*\d+(\.\d+)?\s*$/.test(value)) return parseFloat(value);
    var at = Date.parse(value);
    return isNaN(at) ? null : Math.max(0, (at - Date.now()) / 1000);
  }

  function later(seconds) {
    return new Promise(function (resolve) {
      setTimeout(resolve, seconds * 1000);
    });
  }

  Widget.prototype.upload = function (file, onSlowed) {
    var self = this;
    var url = this.hub + "/api/rooms/" + encodeURIComponent(this.room) + "/attachments";
    var tries = 0;
    function attempt() {
      var body = new FormData();
      body.append("file", file, file.name || "pasted-file");
      var headers = self.token ? { Authorization: "Bearer " + self.token } : {};
      var sent = fetch(url, { method: "POST", body: body, headers: headers }).catch(function () {
        throw new Error("the hub could not be reached (or does not allow uploads from this site)");
      });
      return sent.then(function (resp) {
        // over a limit (429), or busy (503 with Retry-After): wait as told, then again
        var wait = retryAfter(resp.headers.get("Retry-After"));
        if (resp.status === 429 && wait === null) wait = 1; // the header hidden (CORS) or absent
        if ((resp.status === 429 || resp.status === 503) && wait !== null && wait <= MAX_WAIT_S && tries < UPLOAD_TRIES) {
          tries++;
          if (onSlowed) onSlowed(wait);
          return later(wait).then(attempt);
        }
        return resp;
      });
    }
    return attempt().then(function (resp) {
      return resp.json().then(
        function (data) {
          if (!resp.ok) throw new Error((data && data.detail) || "upload failed (" + resp.status + ")");
          return data;
        },
        function () {
          throw new Error("upload failed (" + resp.status + ")");
        }
      );
    });
  };

  Widget.prototype.renderChips = function () {
    var self = this;
    this.chips.textContent = "";
    this.uploads.forEach(function (up, index) {
      var state = up.error ? "lw-chip-error" : up.busy ? "lw-chip-busy" : "lw-chip-ready";
      var label = up.error ? up.name + ": " + up.error : up.busy ? up.name + (up.slowed ? " · uploading (slowed down)…" : " · uploading…") : up.name;
      self.chips.appendChild(
        h("li", { class: "lw-chip " + state }, [
          h("span", { class: "lw-chip-name", text: label }),
          h("button", {
            type: "button",
            class: "lw-chip-remove",
            "aria-label": "Remove " + up.name,
            onclick: function () {
              self.uploads.splice(index, 1);
              self.renderChips();
              self.input.focus();
            },
          }, ["×"]),
        ])
      );
    });
  };

  // ---------------------------------------------------------------- voice messages

  /** Whether this browser can record a voice message (MediaRecorder and getUserMedia). */
  function canRecord() {
    return !!(window.MediaRecorder && navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === "function" && window.isSecureContext !== false);
  }

  /** The container the recording is made in: WebM/Opus where the browser has it. */
  function recordingType() {
    var types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"];
    for (var i = 0; i < types.length; i++) {
      if (typeof MediaRecorder.isTypeSupported === "function" && MediaRecorder.isTypeSupported(types[i])) return types[i];
    }
    return "";
  }

  function extensionOf(type) {
    if (/ogg/.test(type)) return "ogg";
    if (/mp4|aac/.test(type)) return "m4a";
    return "webm";
  }

  /** What went wrong asking for the microphone, in words. */
  function micError(err) {
    var name = (err && err.name) || "";
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return "Microphone access was denied: allow it for this site to record a voice message.";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") return "No microphone was found.";
    if (name === "NotReadableError") return "The microphone is in use by another application.";
    return "The microphone could not be used" + (err && err.message ? ": " + err.message : ".");
  }

  function clock(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  /** The longest recording, in seconds (``max-record`` option; MAX_RECORD_S by default). */
  Widget.prototype.maxRecordSeconds = function () {
    var n = Number(this.opts.maxRecord);
    return isFinite(n) && n > 0 ? n : MAX_RECORD_S;
  };

  Widget.prototype.startRecording = function () {
    var self = this;
    if (this.recording) return;
    if (!canRecord()) {
      this.note("This browser cannot record voice messages.", "error");
      return;
    }
    var rec = (this.recording = { chunks: [], started: 0, send: true, stream: null, recorder: null, timer: null, type: "" });
    this.micButton.disabled = true;
    this.panel.setAttribute("data-recording", "starting");
    // the raw voice: echo cancellation and noise suppression smear speech for the recogniser
    var constraints = { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } };
    navigator.mediaDevices.getUserMedia(constraints).then(
      function (stream) {
        rec.stream = stream;
        if (self.recording !== rec) return self.endRecording(rec); // cancelled meanwhile
        rec.type = recordingType();
        try {
          rec.recorder = rec.type ? new MediaRecorder(stream, { mimeType: rec.type }) : new MediaRecorder(stream);
        } catch (err) {
          self.endRecording(rec);
          self.note("Could not record: " + err.message, "error");
          return;
        }
        rec.recorder.addEventListener("dataavailable", function (ev) {
          if (ev.data && ev.data.size) rec.chunks.push(ev.data);
        });
        rec.recorder.addEventListener("stop", function () {
          self.finishRecording(rec);
        });
        rec.recorder.addEventListener("error", function (ev) {
          rec.send = false;
          self.note("The recording failed" + (ev.error && ev.error.message ? ": " + ev.error.message : "."), "error");
        });
        rec.recorder.start(1000);
        rec.started = Date.now();
        var limit = self.maxRecordSeconds();
        var tick = function () {
          var elapsed = (Date.now() - rec.started) / 1000;
          self.recTime.textContent = clock(elapsed) + " / " + clock(limit);
          self.recBar.setAttribute("data-seconds", String(Math.floor(elapsed)));
          if (elapsed >= limit) {
            rec.limited = true;
            self.stopRecording(true);
          }
        };
        rec.timer = setInterval(tick, 250);
        tick();
        self.recBar.hidden = false;
        self.panel.setAttribute("data-recording", "on");
        var send = self.recBar.querySelector(".lw-rec-send");
        if (send) send.focus();
      },
      function (err) {
        self.endRecording(rec);
        self.note(micError(err), "error");
      }
    );
  };

  /** Stop recording: ``send`` it as a voice message, or throw it away. */
  Widget.prototype.stopRecording = function (send) {
    var rec = this.recording;
    if (!rec) return;
    rec.send = rec.send && !!send;
    if (rec.recorder && rec.recorder.state !== "inactive") {
      rec.recorder.stop(); // the last data, then "stop": finishRecording
      clearInterval(rec.timer);
    } else {
      this.endRecording(rec);
    }
  };

  /** The microphone released and the recording bar gone. */
  Widget.prototype.endRecording = function (rec) {
    clearInterval(rec.timer);
    if (rec.stream) {
      rec.stream.getTracks().forEach(function (track) {
        track.stop();
      });
    }
    if (this.recording !== rec) return;
    this.recording = null;
    this.recBar.hidden = true;
    this.micButton.disabled = false;
    this.panel.removeAttribute("data-recording");
  };

  Widget.prototype.finishRecording = function (rec) {
    var seconds = (Date.now() - rec.started) / 1000;
    this.endRecording(rec);
    if (!rec.send) return;
    var type = (rec.recorder && rec.recorder.mimeType) || rec.type || "audio/webm";
    var blob = new Blob(rec.chunks, { type: type });
    if (!blob.size) {
      this.note("Nothing was recorded.", "error");
      return;
    }
    if (rec.limited) this.note("The recording stopped at the limit of " + clock(this.maxRecordSeconds()) + ".", "info");
    var stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    var file = new File([blob], "voice-message-" + stamp + "." + extensionOf(type), { type: type.split(";")[0] });
    this.sendVoice(file, seconds);
  };

  /** Upload a recording and send it as a message of its own (the hub transcribes it). */
  Widget.prototype.sendVoice = function (file, seconds) {
    var self = this;
    var up = { name: "Voice message (" + clock(seconds) + ")", busy: true, attachment: null, error: null };
    this.uploads.push(up);
    this.renderChips();
    var slowed = function () {
      up.slowed = true;
      self.renderChips();
    };
    this.upload(file, slowed).then(
      function (att) {
        var at = self.uploads.indexOf(up);
        if (at < 0) return; // removed by the user meanwhile: not sent
        self.uploads.splice(at, 1);
        self.renderChips();
        var id = self.nextId("m");
        var frame = { type: "send", room: self.room, text: "", id: id, attachments: [att.id] };
        self.outbox.set(id, frame);
        self.showPending(id, frame, [up]);
        self.sendOrHold(frame);
      },
      function (err) {
        up.busy = false;
        up.error = err.message;
        self.renderChips();
      }
    );
  };

  // ---------------------------------------------------------------- answers read aloud
  // A reading is a queue: the answer's text is cut into pieces at sentence ends, each piece
  // is fetched from POST /v1/audio/speech and played in order. While an answer streams, the
  // complete sentences so far are read and the rest follows as it arrives (the first audio
  // comes before the answer is finished); a finished answer is one piece (several beyond
  // SPEECH_MAX_CHARS). One piece is fetched ahead of the one playing: what arrives meanwhile
  // is read in one request, not one per sentence (each request counts as model use).

  /** The audio format to ask the hub for: one this browser plays. */
  function speechFormat() {
    var probe = document.createElement("audio");
    if (probe.canPlayType('audio/ogg; codecs="opus"')) return "opus";
    if (probe.canPlayType("audio/mpeg")) return "mp3";
    return "wav";
  }

  /** Markdown as words to read: no fences, backticks, emphasis marks, link targets or list marks. */
  function spokenText(md) {
    return md
      .replace(/^\s*```.*$/gm, "")
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1")
      .replace(/^\s{0,3}(#{1,6}|>|[-*+]|\d+[.)])\s+/gm, "")
      .replace(/[`*_~]+/g, "")
      .replace(/\s+/g, " ")
      .trim();
  }

  /** Where the complete sentences of ``text`` end (0: none yet), within ``limit``. */
  function sentencesEnd(text, limit) {
    var re = /[.!?\u2026:;]["')\]]*\s+|\n\s*\n/g;
    var end = 0;
    var m;
    while ((m = re.exec(text)) && m.index + m[0].length <= limit) end = m.index + m[0].length;
    return end;
  }

  /** The next piece of a reading to fetch ("" when nothing is ready yet). */
  function nextPiece(s) {
    while (s.consumed < s.text.length) {
      var rest = s.text.slice(s.consumed);
      var end = sentencesEnd(rest, SPEECH_MAX_CHARS);
      if (s.done && (rest.length <= SPEECH_MAX_CHARS || !end)) end = Math.min(rest.length, SPEECH_MAX_CHARS);
      if (!end) return "";
      s.consumed += end;
      var words = spokenText(rest.slice(0, end));
      if (words) return words;
    }
    return "";
  }

  function playButton(self, el) {
    var play = h("button", { type: "button", class: "lw-play", "aria-label": "Read the answer aloud", "aria-pressed": "false", title: "Read aloud", "data-state": "idle" }, [icon("play")]);
    play.addEventListener("click", function () {
      self.toggleSpeech(el);
    });
    return play;
  }

  /** The play button of an answer (streaming or finished): read it aloud; again: stop. */
  Widget.prototype.toggleSpeech = function (el) {
    var current = this.speaking;
    if (current) {
      this.stopSpeech(current);
      if (current.el === el) return;
    }
    var streamId = el.getAttribute("data-stream");
    var st = streamId ? this.streams.get(streamId) : null;
    var text = st ? st.text : el._lwText || "";
    if (!spokenText(text)) return;
    this.speaking = {
      el: el,
      streamId: st ? streamId : null,
      text: text,
      done: !st,
      consumed: 0,
      queue: [], // fetched pieces (object URLs) waiting to play
      fetching: null, // the AbortController of the piece being fetched
      audio: null,
      pieces: 0,
      seconds: 0,
    };
    this.speechState(this.speaking, "loading");
    this.pumpSpeech(this.speaking);
  };

  /** Fetch the next piece if it is ready and nothing fetched waits; finish when all played. */
  Widget.prototype.pumpSpeech = function (s) {
    var self = this;
    if (this.speaking !== s || s.fetching || s.queue.length) return;
    var piece = nextPiece(s);
    if (!piece) {
      if (s.done && !s.audio) this.finishSpeech(s);
      return;
    }
    var ctrl = (s.fetching = typeof AbortController === "function" ? new AbortController() : {});
    var headers = { "Content-Type": "application/json" };
    if (this.token) headers.Authorization = "Bearer " + this.token;
    var body = JSON.stringify({ model: "tts-1", input: piece, response_format: speechFormat() });
    fetch(this.hub + "/v1/audio/speech", { method: "POST", headers: headers, body: body, signal: ctrl.signal })
      .then(function (resp) {
        if (resp.ok) return resp.blob();
        return resp.json().then(
          function (data) {
            var msg = data && data.error && data.error.message;
            throw new Error(msg || "the hub answered " + resp.status);
          },
          function () {
            throw new Error("the hub answered " + resp.status);
          }
        );
      })
      .then(function (blob) {
        if (self.speaking !== s) return;
        s.fetching = null;
        s.queue.push(URL.createObjectURL(blob));
        self.playNextPiece(s);
        self.pumpSpeech(s);
      })
      .catch(function (err) {
        if (err && err.name === "AbortError") return; // stopped while loading
        if (self.speaking === s) self.stopSpeech(s);
        self.note("Could not read the answer aloud: " + (err && err.message ? err.message : "unknown error"), "error");
      });
  };

  Widget.prototype.playNextPiece = function (s) {
    var self = this;
    if (this.speaking !== s || s.audio || !s.queue.length) return;
    var url = s.queue.shift();
    var audio = (s.audio = h("audio", { class: "lw-tts", src: url, hidden: true }));
    var done = function () {
      audio.remove();
      URL.revokeObjectURL(url);
      if (s.audio === audio) s.audio = null;
    };
    audio.addEventListener("loadedmetadata", function () {
      if (isFinite(audio.duration)) s.seconds += audio.duration;
    });
    audio.addEventListener("ended", function () {
      s.pieces += 1;
      done();
      self.playNextPiece(s);
      self.pumpSpeech(s);
    });
    s.el.appendChild(audio);
    audio.play().then(
      function () {
        if (self.speaking === s) self.speechState(s, "playing");
      },
      function (err) {
        done();
        if (self.speaking !== s || (err && err.name === "AbortError")) return; // stopped
        self.stopSpeech(s);
        self.note("Could not play the audio: " + (err && err.message ? err.message : "unknown error"), "error");
      }
    );
  };

  /** The streamed answer being read grew (``text``) or ended (``el``: its final message). */
  Widget.prototype.speechFollows = function (streamId, text, el) {
    var s = this.speaking;
    if (!s || s.streamId !== streamId) return;
    if (typeof text === "string" && text.length >= s.text.length) s.text = text;
    if (el !== undefined) {
      s.done = true;
      s.streamId = null;
      if (el) {
        s.el = el; // the final message takes over: its button shows the state, audio moves along
        this.speechState(s, s.audio ? "playing" : "loading");
      }
      // (moved within this task: a media element taken out of the page would pause)
      if (s.audio) (el || this.panel).appendChild(s.audio);
    }
    this.pumpSpeech(s);
  };

  /** Every piece played: say so on the answer (pieces, seconds) and reset the button. */
  Widget.prototype.finishSpeech = function (s) {
    s.el.setAttribute("data-speech-pieces", String(s.pieces));
    s.el.setAttribute("data-speech-duration", s.seconds.toFixed(2));
    s.el.setAttribute("data-speech-ended", String(Number(s.el.getAttribute("data-speech-ended") || 0) + 1));
    this.stopSpeech(s);
  };

  Widget.prototype.speechState = function (s, state) {
    var button = s.el.querySelector(".lw-play");
    if (!button) return;
    var playing = state !== "idle";
    button.setAttribute("data-state", state);
    button.setAttribute("aria-pressed", String(playing));
    button.setAttribute("aria-label", playing ? "Stop reading aloud" : "Read the answer aloud");
    button.title = playing ? "Stop" : "Read aloud";
    button.textContent = "";
    button.appendChild(icon(playing ? "stop" : "play"));
  };

  /** Stop reading an answer (playing or still being fetched) and free its audio. */
  Widget.prototype.stopSpeech = function (s) {
    if (!s || this.speaking !== s) return;
    this.speaking = null;
    if (s.fetching && s.fetching.abort) s.fetching.abort();
    if (s.audio) {
      s.audio.pause();
      s.audio.remove();
      URL.revokeObjectURL(s.audio.src);
    }
    s.queue.forEach(function (url) {
      URL.revokeObjectURL(url);
    });
    this.speechState(s, "idle");
  };

  // ------------------------------------------------------------------ mounting

  var instances = [];

  function mount(options) {
    if (!options || !options.room) throw new Error("LydianWidget.mount needs a room");
    var widget = new Widget(options);
    instances.push(widget);
    return widget;
  }

  function fromScript(script) {
    var d = script.dataset;
    var base = d.hub || new URL(script.src, location.href).origin;
    return { room: d.room, tokenUrl: d.tokenUrl, target: d.target, title: d.title, open: d.open, hub: base, maxRecord: d.maxRecord };
  }

  window.LydianWidget = { mount: mount, instances: instances, renderMarkdown: renderMarkdown, version: VERSION };

  if (currentScript && currentScript.dataset.room) {
    var options = fromScript(currentScript);
    var start = function () {
      mount(options);
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
})();
