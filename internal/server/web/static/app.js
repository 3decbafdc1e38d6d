// bty browser UI: local times, focus kept across live updates, uploads
// with progress. Everything else is server-rendered HTML and htmx.
(function () {
  'use strict';

  var pad = function (n) { return (n < 10 ? '0' : '') + n; };
  var zone = (function () {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (e) { return ''; }
  })();

  // localizeTimes shows every <time datetime> in the browser's time zone
  // as YYYY-MM-DD HH:MM:SS, with the UTC instant and the zone as title.
  function localizeTimes(root) {
    var els = (root || document).querySelectorAll('time[datetime]:not([data-local])');
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      var d = new Date(el.getAttribute('datetime'));
      if (isNaN(d.getTime())) continue;
      el.textContent = d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
        pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
      el.title = el.getAttribute('datetime') + (zone ? ' (shown in ' + zone + ')' : '');
      el.setAttribute('data-local', '1');
    }
  }

  function fmtBytes(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
  }

  // Uploads go straight to the API (PUT /images/NAME, PUT /boot/NAME)
  // with the session cookie, so a large file streams without a multipart
  // copy and the bar shows real progress.
  function setupUpload(form) {
    var file = form.querySelector('input[type=file]');
    var nameInput = form.querySelector('input[name=name]');
    var nameSelect = form.dataset.nameSelect ? form.querySelector(form.dataset.nameSelect) : null;
    var bar = form.querySelector('progress');
    var status = form.querySelector('.upload-status');
    var submit = form.querySelector('button[type=submit]');
    var cancel = form.querySelector('.cancel-upload');
    var xhr = null;
    var say = function (msg, kind) {
      status.textContent = msg;
      status.className = 'upload-status' + (kind ? ' ' + kind : '');
    };
    cancel.addEventListener('click', function () { if (xhr) xhr.abort(); });
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (xhr) return;
      var f = file.files && file.files[0];
      if (!f) { say('Choose a file first.', 'error'); file.focus(); return; }
      var name = (nameInput && nameInput.value.trim()) || (nameSelect && nameSelect.value) || f.name;
      xhr = new XMLHttpRequest();
      xhr.open('PUT', form.dataset.endpoint + encodeURIComponent(name));
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      var started = Date.now();
      bar.hidden = false; bar.max = f.size || 1; bar.value = 0;
      submit.disabled = true; submit.setAttribute('aria-busy', 'true');
      cancel.hidden = false;
      say('Uploading ' + name + '…');
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable) return;
        bar.max = e.total; bar.value = e.loaded;
        var secs = (Date.now() - started) / 1000;
        var rate = secs > 0 ? e.loaded / secs : 0;
        say('Uploading ' + name + ': ' + Math.floor(100 * e.loaded / e.total) + '% (' + fmtBytes(e.loaded) + ' of ' +
          fmtBytes(e.total) + (rate ? ', ' + fmtBytes(rate) + '/s' : '') + ')');
      };
      var done = function () {
        xhr = null;
        submit.disabled = false; submit.removeAttribute('aria-busy');
        cancel.hidden = true;
      };
      xhr.onload = function () {
        var body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) {
          bar.value = bar.max;
          say('Done: uploaded ' + name + ' (' + fmtBytes(f.size) + ')' + (xhr.status === 200 ? ', replacing the old file.' : '.'), 'ok');
          form.reset();
          if (window.htmx && form.dataset.reload) {
            htmx.ajax('GET', window.location.pathname, { target: form.dataset.reload, select: form.dataset.reload, swap: 'outerHTML' });
          }
        } else if (xhr.status === 401) {
          say('Upload refused: your session has ended. Log in again (in another tab) and retry.', 'error');
        } else {
          say('Upload failed (' + xhr.status + '): ' + (body.error || xhr.statusText || 'no reason given') + '. Nothing was kept.', 'error');
        }
        done();
      };
      xhr.onerror = function () { say('Upload failed: the connection to the server broke. Nothing was kept.', 'error'); done(); };
      xhr.onabort = function () { say('Upload cancelled. Nothing was kept.', 'error'); bar.hidden = true; done(); };
      xhr.send(f);
    });
  }

  // The workflow upload form: a chosen file's name shows as the name's
  // placeholder (the server takes it when the name is left empty).
  function setupWorkflowName(form) {
    var file = form.querySelector('input[type=file]');
    var name = form.querySelector('input[name=name]');
    if (!file || !name) return;
    var ph = name.getAttribute('placeholder') || '';
    file.addEventListener('change', function () {
      var f = file.files && file.files[0];
      name.setAttribute('placeholder', f ? f.name : ph);
    });
  }

  // The bulk form shows the control of the chosen action only.
  function setupBulk(form) {
    var action = form.querySelector('#bulk-action');
    var sync = function () {
      form.querySelector('label[for=bulk-policy]').hidden = action.value !== 'policy';
      form.querySelector('label[for=bulk-image]').hidden = action.value !== 'image';
    };
    action.addEventListener('change', sync);
    sync();
  }

  // Live table. The page subscribes to /events/machines?snapshot=0: no
  // fleet-sized snapshot, one small event per change. An event for a
  // machine on this page fetches and swaps just its row
  // (/ui/machines/MAC/row); any other change (a machine that may now
  // belong on this page, the counts) refreshes the page's table at most
  // every pageEvery ms. Both are coalesced: at most one fetch in flight
  // (per row, and for the table), and one more after it when anything
  // changed meanwhile, so the last change always shows. A "resync" (this
  // page fell behind the server's event log) and every (re)connection
  // refresh the table, for the changes it may have missed.
  var pageEvery = 2000;
  var liveTimer = null, liveBusy = false, livePending = false, liveLast = 0;
  function refreshTable() {
    liveTimer = null;
    var table = document.getElementById('machines-table');
    if (!table || !window.htmx) return;
    if (liveBusy) { livePending = true; return; }
    liveBusy = true; livePending = false; liveLast = Date.now();
    // The same view (filter, sort, page) with the checked rows kept checked.
    var url = table.getAttribute('data-refresh');
    var checked = table.querySelectorAll('input.select-row:checked');
    for (var i = 0; i < checked.length; i++) url += '&mac=' + encodeURIComponent(checked[i].value);
    var done = function () {
      liveBusy = false;
      if (livePending) scheduleRefresh();
    };
    htmx.ajax('GET', url, { target: '#machines-table', select: '#machines-table', swap: 'outerHTML' }).then(done, done);
  }
  // scheduleRefresh refreshes the table soon, but not sooner than
  // pageEvery after the last refresh began.
  function scheduleRefresh() {
    if (!liveTimer) liveTimer = setTimeout(refreshTable, Math.max(250, liveLast + pageEvery - Date.now()));
  }
  function refreshNow() {
    if (liveTimer) clearTimeout(liveTimer);
    liveTimer = setTimeout(refreshTable, 0);
  }

  function shownRow(mac) {
    return document.querySelector('#machine-rows tr[data-mac="' + (window.CSS && CSS.escape ? CSS.escape(mac) : mac) + '"]');
  }
  var rowBusy = {}, rowPending = {};
  function refreshRow(mac) {
    if (rowBusy[mac]) { rowPending[mac] = true; return; }
    var tr = shownRow(mac);
    if (!tr) { scheduleRefresh(); return; }
    rowBusy[mac] = true;
    var box = tr.querySelector('input.select-row');
    var url = '/ui/machines/' + encodeURIComponent(mac) + '/row' + (box && box.checked ? '?selected=1' : '');
    fetch(url, { credentials: 'same-origin', headers: { 'HX-Request': 'true' } }).then(function (resp) {
      if (resp.status === 404) { // deleted meanwhile
        var gone = shownRow(mac);
        if (gone) gone.remove();
        scheduleRefresh();
        return null;
      }
      return resp.ok && !resp.redirected ? resp.text() : null;
    }).then(function (html) {
      var cur = shownRow(mac);
      if (html == null || !cur) return;
      var tmp = document.createElement('tbody');
      tmp.innerHTML = html;
      var row = tmp.querySelector('tr[data-mac]');
      if (!row || row.getAttribute('data-mac') !== mac) return;
      // Keep what the user did meanwhile: the checkbox, the focus.
      var was = cur.querySelector('input.select-row'), now = row.querySelector('input.select-row');
      if (was && now) now.checked = was.checked;
      var a = document.activeElement, focusId = a && cur.contains(a) ? a.id : null;
      cur.replaceWith(row);
      localizeTimes(row);
      if (window.htmx) htmx.process(row);
      if (focusId && document.getElementById(focusId)) document.getElementById(focusId).focus({ preventScroll: true });
    }).catch(function () { /* the next event or resync shows it */ }).then(function () {
      rowBusy[mac] = false;
      if (rowPending[mac]) { delete rowPending[mac]; refreshRow(mac); }
    });
  }
  // Machine page: its flash section (#flash-section, inside #flash-live,
  // which subscribes to /events/machines?snapshot=0) and its workflow
  // runs section (#runs) are fetched again (their data-refresh) and
  // swapped in on each event for this machine, on a resync and on every
  // (re)connection; coalesced like the rows: one fetch in flight per
  // section, one more after it when anything changed meanwhile.
  var secBusy = {}, secPending = {};
  function refreshSection(id) {
    var sec = document.getElementById(id);
    if (!sec) return;
    if (secBusy[id]) { secPending[id] = true; return; }
    secBusy[id] = true; secPending[id] = false;
    fetch(sec.getAttribute('data-refresh'), { credentials: 'same-origin', headers: { 'HX-Request': 'true' } }).then(function (resp) {
      return resp.ok && !resp.redirected ? resp.text() : null;
    }).then(function (html) {
      var cur = document.getElementById(id);
      if (html == null || !cur) return;
      var tmp = document.createElement('div');
      tmp.innerHTML = html;
      var next = tmp.querySelector('#' + id);
      if (!next) return;
      var a = document.activeElement, focusId = a && cur.contains(a) ? a.id : null;
      cur.replaceWith(next);
      localizeTimes(next);
      if (id === 'runs') startLog();
      if (focusId && document.getElementById(focusId)) document.getElementById(focusId).focus({ preventScroll: true });
    }).catch(function () { /* the next event shows it */ }).then(function () {
      secBusy[id] = false;
      if (secPending[id]) refreshSection(id);
    });
  }
  function refreshFlash() { refreshSection('flash-section'); }
  function refreshRuns() { refreshSection('runs'); }

  // The live log of a queued or running workflow run (pre#run-log): every
  // logEvery ms the bytes after data-offset are fetched from the API
  // (GET /runs/ID/log?offset=N, the session cookie authenticates it) and
  // appended, keeping the last logKeep characters; when X-Run-Result says
  // the run ended, the runs section is fetched again (without the log).
  // A response for a log element the section swap replaced meanwhile,
  // or from an offset it no longer has, is dropped.
  var logEvery = 2000, logKeep = 65536;
  var logBusy = false, logTimer = null;
  var decoders = typeof WeakMap === 'function' ? new WeakMap() : null;
  function trimLog(pre) {
    var t = pre.textContent;
    if (t.length <= logKeep) return;
    t = t.slice(t.length - logKeep);
    var nl = t.indexOf('\n');
    if (nl >= 0 && nl < t.length - 1) t = t.slice(nl + 1);
    pre.textContent = t;
  }
  function pollLog() {
    var pre = document.getElementById('run-log');
    if (!pre || logBusy) return;
    logBusy = true;
    var offset = pre.getAttribute('data-offset') || '0';
    var result = '', size = null;
    fetch(pre.getAttribute('data-src') + '?offset=' + encodeURIComponent(offset), { credentials: 'same-origin' }).then(function (resp) {
      if (!resp.ok) {
        // Gone (pruned, machine deleted) or the session ended: show
        // the section as the server has it now.
        if (resp.status === 404 || resp.status === 410) refreshRuns();
        return null;
      }
      result = resp.headers.get('X-Run-Result') || '';
      size = resp.headers.get('X-Log-Size');
      return resp.arrayBuffer();
    }).then(function (buf) {
      if (buf == null) return;
      if (document.getElementById('run-log') !== pre || pre.getAttribute('data-offset') !== offset) return;
      if (buf.byteLength > 0) {
        var dec = decoders && decoders.get(pre);
        if (!dec && window.TextDecoder) {
          dec = new TextDecoder('utf-8');
          if (decoders) decoders.set(pre, dec);
        }
        var text = dec ? dec.decode(buf, { stream: true }) : String.fromCharCode.apply(null, new Uint8Array(buf));
        var atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
        pre.appendChild(document.createTextNode(text));
        trimLog(pre);
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
      if (size != null) pre.setAttribute('data-offset', size);
      if (result && result !== 'queued' && result !== 'running') refreshRuns();
    }).catch(function () { /* the next poll tries again */ }).then(function () {
      logBusy = false;
    });
  }
  // startLog starts the polling once a page (or a swapped-in section)
  // has a live log; it runs while the page is open.
  function startLog() {
    var pre = document.getElementById('run-log');
    if (!pre) return;
    pre.scrollTop = pre.scrollHeight;
    if (!logTimer) logTimer = setInterval(pollLog, logEvery);
  }

  document.addEventListener('sse:machine', function (ev) {
    var e = null;
    try { e = JSON.parse(ev.detail && ev.detail.data); } catch (err) { /* not JSON */ }
    var mac = e && e.mac;
    var live = document.getElementById('flash-live');
    if (live) {
      if (mac && mac === live.getAttribute('data-mac')) { refreshFlash(); refreshRuns(); }
      return;
    }
    if (!mac || !shownRow(mac)) { scheduleRefresh(); return; }
    if (e.type === 'delete') {
      shownRow(mac).remove();
      scheduleRefresh();
      return;
    }
    refreshRow(mac);
  });
  document.addEventListener('sse:resync', function () {
    if (document.getElementById('flash-live')) { refreshFlash(); refreshRuns(); }
    else refreshNow();
  });
  document.addEventListener('htmx:sseOpen', function (ev) {
    if (document.getElementById('machines-table') && ev.target && ev.target.id === 'bulk-form') refreshNow();
    if (ev.target && ev.target.id === 'flash-live') { refreshFlash(); refreshRuns(); }
  });

  // Live updates replace the table; keep keyboard focus where it was.
  var focusId = null;
  document.addEventListener('htmx:beforeSwap', function () {
    var a = document.activeElement;
    focusId = a && a.id && a !== document.body ? a.id : null;
  });
  document.addEventListener('htmx:afterSettle', function () {
    if (!focusId) return;
    var el = document.getElementById(focusId);
    if (el && el !== document.activeElement) el.focus({ preventScroll: true });
    focusId = null;
  });

  function init() {
    localizeTimes(document);
    var ups = document.querySelectorAll('form.upload');
    for (var i = 0; i < ups.length; i++) setupUpload(ups[i]);
    var bulk = document.getElementById('bulk-form');
    if (bulk) setupBulk(bulk);
    startLog();
    var wf = document.getElementById('workflow-upload');
    if (wf) setupWorkflowName(wf);
    if (window.htmx) htmx.onLoad(localizeTimes);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
