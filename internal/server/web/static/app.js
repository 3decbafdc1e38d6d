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

  // Live table: every machine event (relayed by the SSE extension as
  // sse:machine on #live-signal) asks for one refresh of the table. Events
  // are coalesced: at most one refresh in flight, and one more after it
  // when anything changed meanwhile, so the last change always shows.
  var liveTimer = null, liveBusy = false, livePending = false;
  function refreshTable() {
    liveTimer = null;
    var table = document.getElementById('machines-table');
    if (!table || !window.htmx) return;
    if (liveBusy) { livePending = true; return; }
    liveBusy = true; livePending = false;
    // The same view (filter, sort) with the checked rows kept checked.
    var url = table.getAttribute('data-refresh');
    var checked = table.querySelectorAll('input.select-row:checked');
    for (var i = 0; i < checked.length; i++) url += '&mac=' + encodeURIComponent(checked[i].value);
    var done = function () {
      liveBusy = false;
      if (livePending) scheduleRefresh();
    };
    htmx.ajax('GET', url, { target: '#machines-table', select: '#machines-table', swap: 'outerHTML' }).then(done, done);
  }
  function scheduleRefresh() {
    if (!liveTimer) liveTimer = setTimeout(refreshTable, 250);
  }
  document.addEventListener('sse:machine', scheduleRefresh);
  document.addEventListener('sse:snapshot', scheduleRefresh);

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
    if (window.htmx) htmx.onLoad(localizeTimes);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
