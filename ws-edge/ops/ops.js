// The operations page: one admin WebSocket on /ws?fleet=1 (logi dialect), the
// fleet drawn on a canvas, bookings and events as small bounded DOM lists.
//
// Shape: frames are applied to `state` as they arrive (a Map per kind, cheap);
// drawing happens at most once per animation frame, and only what changed is
// redrawn. There is no DOM node per driver, so 5,000 moving drivers cost one
// canvas pass per frame. `window.opsState()` returns a plain copy of the state
// for the browser test.
'use strict';
(() => {
  const TOKEN_KEY = 'logi.ops.token';
  const MAX_TABLE = 200; // bookings shown
  const MAX_KNOWN = 20000; // bookings counted; the oldest are forgotten past it
  const MAX_EVENTS = 50;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const PREFLIGHT_TIMEOUT_MS = 5000;
  const DRIVER_STATUSES = ['Available', 'On Trip', 'Offline'];
  const BOOKING_STATUSES = ['Pending', 'Accepted', 'In Transit', 'Completed', 'Cancelled', 'Expired'];

  const $ = (id) => document.getElementById(id);
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue(name).trim();
  const DRIVER_COLOURS = {
    Available: colour('--available'),
    'On Trip': colour('--on-trip'),
    Offline: colour('--offline'),
  };
  const slug = (status) => status.toLowerCase().replace(/\s+/g, '-');

  const state = {
    connection: 'idle', // idle | connecting | live | reconnecting | refused
    message: '',
    drivers: new Map(), // id -> {status, vehicle_type, latitude, longitude, booking_id}
    bookings: new Map(), // id -> {status, history: [status…], updated: Date}, insertion order = first seen
    events: [], // newest first: {at, text, tone}
  };
  const dirty = { map: true, drivers: true, bookings: new Set(), events: 0 };

  // ---- connection ---------------------------------------------------------

  let socket = null;
  // Counts calls of connect(): a preflight answer that comes after a newer
  // connect() began (a second sign-in, a changed #token=) is dropped.
  let connects = 0;
  let attempt = 0;
  let retryAt = 0;
  let retryTimer = 0;
  let countdown = 0;

  function setConnection(connection, message = '') {
    state.connection = connection;
    state.message = message;
    document.body.dataset.connection = connection;
    const text = {
      idle: 'Not connected',
      connecting: 'Connecting…',
      live: 'Live',
      refused: 'Signed out',
    }[connection];
    if (text) $('connection').textContent = text;
    $('change-token').hidden = connection === 'refused' || connection === 'idle';
  }

  function storedToken() {
    // A token in the page's address (#token= stays in the browser; ?token= works
    // too) is moved to this tab's storage and taken out of the address bar.
    const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
    const fromQuery = new URLSearchParams(location.search).get('token');
    const given = fromHash || fromQuery;
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given.trim());
      history.replaceState(null, '', location.pathname);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  // The claims of a JWT, unverified (the edge verifies): only to tell an
  // operator which role a token has.
  function claims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    } catch {
      return null;
    }
  }

  function askForToken(message, tone = 'error') {
    // A token the page asks to replace is not tried again on reload.
    sessionStorage.removeItem(TOKEN_KEY);
    closeSocket();
    clearRetry();
    setConnection(message ? 'refused' : 'idle', message);
    const box = $('signin-message');
    box.textContent = message;
    box.classList.toggle('info', tone === 'info');
    $('signin').hidden = false;
    $('token-input').value = '';
    $('token-input').focus();
  }

  async function connect() {
    const generation = ++connects;
    clearRetry();
    // One socket at a time: frames of an old one would be applied twice.
    closeSocket();
    const token = storedToken();
    if (!token) {
      askForToken('');
      return;
    }
    $('signin').hidden = true;
    setConnection('connecting');
    const path = `/ws?token=${encodeURIComponent(token)}&fleet=1`;
    // A browser's WebSocket cannot read why a handshake was refused, so the
    // same URL is asked as a plain GET first: the edge answers a refusal with
    // its status and reason, and a good token with 426.
    let status;
    let reason;
    try {
      const answer = await fetch(path, {
        cache: 'no-store',
        signal: AbortSignal.timeout(PREFLIGHT_TIMEOUT_MS),
      });
      status = answer.status;
      reason = (await answer.text()).trim();
    } catch {
      if (generation === connects) retry('the edge does not answer');
      return;
    }
    if (generation !== connects) return;
    if (status === 401) {
      askForToken(`Token refused: ${reason}. Paste a fresh admin token.`);
      return;
    }
    const role = claims(token)?.role;
    if ((status === 403 || status === 426) && role !== 'admin') {
      askForToken(`Not an admin token: this is a ${role || 'role-less'} token. The operations page needs an admin token.`);
      return;
    }
    if (status === 403) {
      askForToken(`Token refused: ${reason}.`);
      return;
    }
    if (status !== 426) {
      retry(reason || `the edge answered HTTP ${status}`);
      return;
    }
    open(path);
  }

  function open(path) {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}${path}`);
    socket = ws;
    ws.onopen = () => {
      if (socket !== ws) return;
      attempt = 0;
      setConnection('live');
      addEvent('Connected', 'ok');
    };
    ws.onmessage = (message) => {
      if (socket !== ws) return; // a socket closed on purpose may still deliver
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      apply(frame);
    };
    ws.onclose = (close) => {
      if (socket !== ws) return; // closed on purpose
      socket = null;
      if (close.code === 4001) {
        addEvent('The token expired', 'bad');
        askForToken('The token expired while connected. Paste a new admin token.');
        return;
      }
      const why = close.reason || (close.code === 1006 ? 'connection lost' : `closed with ${close.code}`);
      addEvent(`Disconnected: ${why}`, 'warn');
      retry(why);
    };
  }

  function closeSocket() {
    if (socket) {
      const ws = socket;
      socket = null;
      ws.close(1000);
    }
  }

  // Jittered exponential backoff: half to all of 0.5 s, 1 s, 2 s … 10 s.
  function retry(why) {
    closeSocket();
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    attempt += 1;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    retryAt = Date.now() + delay;
    setConnection('reconnecting', why);
    const tick = () => {
      const seconds = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
      $('connection').textContent = `Reconnecting in ${seconds} s… (${why})`;
    };
    tick();
    countdown = setInterval(tick, 250);
    retryTimer = setTimeout(connect, delay);
  }

  function clearRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdown);
  }

  // ---- frames -------------------------------------------------------------

  function apply(frame) {
    const p = frame.payload || {};
    switch (frame.type) {
      case 'fleet_snapshot':
        // A (re)connection's snapshot replaces what the page knew of drivers,
        // and brings the bookings in progress up to date. Bookings that ended
        // stay as the page last saw them.
        state.drivers = new Map();
        for (const d of p.drivers || []) state.drivers.set(String(d.driver_id), driver(d));
        for (const b of p.bookings || []) booking(String(b.booking_id), b.status);
        addEvent(`Snapshot: ${state.drivers.size.toLocaleString()} drivers, ${(p.bookings || []).length.toLocaleString()} bookings in progress`, 'ok');
        touchDrivers();
        break;
      case 'driver_position':
        state.drivers.set(String(p.driver_id), driver(p));
        touchDrivers();
        break;
      case 'driver_status_update': {
        const id = String(p.driver_id);
        const known = state.drivers.get(id) || driver({ driver_id: id });
        known.status = p.status;
        if (p.status !== 'On Trip') known.booking_id = '';
        state.drivers.set(id, known);
        addEvent(`Driver ${id} is ${p.status}`);
        touchDrivers();
        break;
      }
      case 'status_update':
        booking(String(p.booking_id), p.status);
        addEvent(`Booking #${p.booking_id} ${p.status}`, p.status === 'Cancelled' || p.status === 'Expired' ? 'warn' : '');
        break;
      case 'error':
        addEvent(`Edge: ${frame.message}`, 'bad');
        break;
      default:
        break;
    }
  }

  function driver(d) {
    return {
      status: d.status || 'Offline',
      vehicle_type: d.vehicle_type || '',
      latitude: typeof d.latitude === 'number' ? d.latitude : null,
      longitude: typeof d.longitude === 'number' ? d.longitude : null,
      booking_id: d.booking_id || '',
    };
  }

  function booking(id, status) {
    let b = state.bookings.get(id);
    if (!b) {
      b = { status, history: [], updated: null };
      state.bookings.set(id, b);
      if (state.bookings.size > MAX_KNOWN) state.bookings.delete(state.bookings.keys().next().value);
    }
    b.status = status;
    if (b.history[b.history.length - 1] !== status) b.history.push(status);
    b.updated = new Date();
    dirty.bookings.add(id);
    schedule();
  }

  function addEvent(text, tone = '') {
    state.events.unshift({ at: new Date(), text, tone });
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    dirty.events += 1;
    schedule();
  }

  function touchDrivers() {
    dirty.drivers = true;
    dirty.map = true;
    schedule();
  }

  // ---- drawing ------------------------------------------------------------

  let scheduled = false;
  function schedule() {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(frame);
    }
  }

  function frame() {
    scheduled = false;
    if (dirty.drivers) renderDriverCounters();
    if (dirty.bookings.size) renderBookings();
    if (dirty.events) renderEvents();
    if (dirty.map) drawMap();
  }

  function renderDriverCounters() {
    dirty.drivers = false;
    const counts = Object.fromEntries(DRIVER_STATUSES.map((s) => [s, 0]));
    let unplaced = 0;
    for (const d of state.drivers.values()) {
      if (d.status in counts) counts[d.status] += 1;
      if (d.latitude === null) unplaced += 1;
    }
    for (const s of DRIVER_STATUSES) document.querySelector(`[data-drivers="${s}"]`).textContent = counts[s].toLocaleString();
    const total = state.drivers.size;
    $('map-note').textContent =
      `${total.toLocaleString()} driver${total === 1 ? '' : 's'}` + (unplaced ? `, ${unplaced.toLocaleString()} without a position` : '');
  }

  const rows = new Map(); // booking id -> <tr>, for the table's newest MAX_TABLE
  const newest = () => [...rows.keys()].reduce((a, b) => Math.max(a, Number(b)), -Infinity);

  function renderBookings() {
    const tbody = $('bookings').tBodies[0];
    for (const id of dirty.bookings) {
      const b = state.bookings.get(id);
      if (!b) continue;
      let tr = rows.get(id);
      if (!tr) {
        // Older than every row of a full table: counted, not shown.
        if (rows.size >= MAX_TABLE && Number(id) < oldestRow()) continue;
        tr = document.createElement('tr');
        tr.dataset.booking = id;
        for (let i = 0; i < 4; i += 1) tr.appendChild(document.createElement('td'));
        tr.cells[3].className = 'history';
        tr.cells[0].textContent = id;
        insertRow(tbody, tr, Number(id));
        rows.set(id, tr);
        while (rows.size > MAX_TABLE) {
          const last = tbody.lastElementChild;
          rows.delete(last.dataset.booking);
          last.remove();
        }
      }
      const badge = document.createElement('span');
      badge.className = `status ${slug(b.status)}`;
      badge.textContent = b.status;
      tr.cells[1].replaceChildren(badge);
      tr.cells[2].textContent = b.updated.toLocaleTimeString([], { hour12: false });
      tr.cells[3].textContent = b.history.join(' → ');
      tr.classList.remove('changed');
      void tr.offsetWidth; // restarts the highlight
      tr.classList.add('changed');
    }
    dirty.bookings.clear();
    $('bookings-empty').hidden = rows.size > 0;
    const counts = Object.fromEntries(BOOKING_STATUSES.map((s) => [s, 0]));
    for (const b of state.bookings.values()) if (b.status in counts) counts[b.status] += 1;
    for (const s of BOOKING_STATUSES) document.querySelector(`[data-bookings="${s}"]`).textContent = counts[s].toLocaleString();
  }

  function oldestRow() {
    const last = $('bookings').tBodies[0].lastElementChild;
    return last ? Number(last.dataset.booking) : -Infinity;
  }

  // Newest (highest id) first; a new booking nearly always goes on top.
  function insertRow(tbody, tr, id) {
    if (id > newest()) {
      tbody.prepend(tr);
      return;
    }
    for (const row of tbody.rows) {
      if (Number(row.dataset.booking) < id) {
        tbody.insertBefore(tr, row);
        return;
      }
    }
    tbody.appendChild(tr);
  }

  let shownEvents = [];
  function renderEvents() {
    const list = $('events');
    const fresh = state.events.slice(0, Math.min(dirty.events, MAX_EVENTS));
    dirty.events = 0;
    for (const e of fresh.reverse()) {
      const li = document.createElement('li');
      if (e.tone) li.className = e.tone;
      const time = document.createElement('time');
      time.textContent = e.at.toLocaleTimeString([], { hour12: false });
      const text = document.createElement('span');
      text.textContent = e.text;
      li.append(time, text);
      list.prepend(li);
    }
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
    shownEvents = state.events;
  }

  // The map: longitude across, latitude up, one degree of longitude drawn
  // cos(latitude) as wide as one of latitude so the area keeps its shape. The
  // view eases toward the drivers' bounds, so it does not jump as they move.
  const canvas = $('map');
  const ctx = canvas.getContext('2d');
  const MARGIN = { left: 76, right: 12, top: 12, bottom: 40 };
  const MIN_SPAN_DEG = 0.01;
  let view = null; // {lat, lon, span}: centre and the latitude span shown
  let plot = null; // what the last draw used, for projecting points

  function targetView() {
    let minLat = Infinity;
    let maxLat = -Infinity;
    let minLon = Infinity;
    let maxLon = -Infinity;
    for (const d of state.drivers.values()) {
      if (d.latitude === null) continue;
      minLat = Math.min(minLat, d.latitude);
      maxLat = Math.max(maxLat, d.latitude);
      minLon = Math.min(minLon, d.longitude);
      maxLon = Math.max(maxLon, d.longitude);
    }
    if (minLat === Infinity) return null;
    const lat = (minLat + maxLat) / 2;
    const lon = (minLon + maxLon) / 2;
    const k = Math.cos((lat * Math.PI) / 180);
    const width = canvas.clientWidth - MARGIN.left - MARGIN.right;
    const height = canvas.clientHeight - MARGIN.top - MARGIN.bottom;
    // The latitude span that fits both extents, plus a margin of 12 %.
    const span = Math.max(MIN_SPAN_DEG, maxLat - minLat, ((maxLon - minLon) * k * height) / Math.max(1, width)) * 1.12;
    return { lat, lon, span };
  }

  function ease(current, target) {
    if (!current) return { view: target, moving: false };
    const f = 0.2;
    const next = {
      lat: current.lat + (target.lat - current.lat) * f,
      lon: current.lon + (target.lon - current.lon) * f,
      span: current.span + (target.span - current.span) * f,
    };
    const close = Math.abs(next.lat - target.lat) < target.span * 1e-3 && Math.abs(next.lon - target.lon) < target.span * 1e-3
      && Math.abs(next.span - target.span) < target.span * 1e-3;
    return { view: close ? target : next, moving: !close };
  }

  function niceStep(range, ticks) {
    const raw = range / ticks;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
  }

  function drawMap() {
    dirty.map = false;
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth;
    const cssH = canvas.clientHeight;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const w = cssW - MARGIN.left - MARGIN.right;
    const h = cssH - MARGIN.top - MARGIN.bottom;
    ctx.fillStyle = '#f8fafc';
    ctx.fillRect(MARGIN.left, MARGIN.top, w, h);
    ctx.strokeStyle = '#e2e8f0';
    ctx.strokeRect(MARGIN.left + 0.5, MARGIN.top + 0.5, w - 1, h - 1);

    const target = targetView();
    if (!target) {
      plot = null;
      view = null;
      ctx.fillStyle = '#64748b';
      ctx.font = '14px system-ui, sans-serif';
      ctx.textAlign = 'center';
      ctx.fillText(state.connection === 'live' ? 'No driver has a known position yet' : 'Waiting for the fleet…', MARGIN.left + w / 2, MARGIN.top + h / 2);
      return;
    }
    const eased = ease(view, target);
    view = eased.view;
    const k = Math.cos((view.lat * Math.PI) / 180);
    const scale = h / view.span; // px per degree of latitude
    plot = { view, k, scale, w, h };
    const x = (lon) => MARGIN.left + w / 2 + (lon - view.lon) * k * scale;
    const y = (lat) => MARGIN.top + h / 2 - (lat - view.lat) * scale;

    // Grid and axes, in degrees.
    const latStep = niceStep(view.span, Math.max(2, h / 70));
    const lonSpan = w / (k * scale);
    const lonStep = niceStep(lonSpan, Math.max(2, w / 110));
    const decimals = (step) => Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#64748b';
    ctx.strokeStyle = '#e8edf3';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let lat = Math.ceil((view.lat - view.span / 2) / latStep) * latStep; lat <= view.lat + view.span / 2; lat += latStep) {
      const py = Math.round(y(lat)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(MARGIN.left, py);
      ctx.lineTo(MARGIN.left + w, py);
      ctx.stroke();
      ctx.fillText(`${lat.toFixed(decimals(latStep))}°`, MARGIN.left - 6, py);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (let lon = Math.ceil((view.lon - lonSpan / 2) / lonStep) * lonStep; lon <= view.lon + lonSpan / 2; lon += lonStep) {
      const px = Math.round(x(lon)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(px, MARGIN.top);
      ctx.lineTo(px, MARGIN.top + h);
      ctx.stroke();
      ctx.fillText(`${lon.toFixed(decimals(lonStep))}°`, px, MARGIN.top + h + 6);
    }
    ctx.save();
    ctx.translate(10, MARGIN.top + h / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText('latitude', 0, -6);
    ctx.restore();
    ctx.fillText('longitude', MARGIN.left + w / 2, MARGIN.top + h + 22);

    // Drivers: one path per status; offline under the others.
    ctx.save();
    ctx.beginPath();
    ctx.rect(MARGIN.left, MARGIN.top, w, h);
    ctx.clip();
    const many = state.drivers.size > 1500;
    const r = many ? 2.2 : 5;
    for (const status of ['Offline', 'Available', 'On Trip']) {
      ctx.beginPath();
      for (const d of state.drivers.values()) {
        if (d.status !== status || d.latitude === null) continue;
        const px = x(d.longitude);
        const py = y(d.latitude);
        if (many) {
          // A square this small reads as a dot and rasterises far faster than an arc.
          ctx.rect(px - r, py - r, 2 * r, 2 * r);
        } else {
          ctx.moveTo(px + r, py);
          ctx.arc(px, py, r, 0, Math.PI * 2);
        }
      }
      ctx.fillStyle = DRIVER_COLOURS[status];
      ctx.fill();
      if (!many) {
        ctx.strokeStyle = '#ffffff';
        ctx.lineWidth = 1.5;
        ctx.stroke();
      }
    }
    // A small fleet is labelled, so a driver can be found by its id.
    if (state.drivers.size <= 40) {
      ctx.font = '11px system-ui, sans-serif';
      ctx.fillStyle = '#475569';
      ctx.textAlign = 'left';
      ctx.textBaseline = 'middle';
      for (const [id, d] of state.drivers) {
        if (d.latitude !== null) ctx.fillText(id, x(d.longitude) + r + 4, y(d.latitude));
      }
    }
    ctx.restore();
    if (eased.moving) {
      dirty.map = true;
      schedule();
    }
  }

  // Where a driver is drawn, in CSS pixels of the canvas; null when it is not.
  function pointOf(d) {
    if (!plot || d.latitude === null) return null;
    const { view: v, k, scale, w, h } = plot;
    const px = MARGIN.left + w / 2 + (d.longitude - v.lon) * k * scale;
    const py = MARGIN.top + h / 2 - (d.latitude - v.lat) * scale;
    if (px < MARGIN.left || px > MARGIN.left + w || py < MARGIN.top || py > MARGIN.top + h) return null;
    return [px, py];
  }

  // The driver under the pointer, by a scan: fine for thousands, and only on move.
  canvas.addEventListener('mousemove', (e) => {
    const tip = $('tooltip');
    let best = null;
    let bestDist = 64; // within 8 px
    for (const [id, d] of state.drivers) {
      const p = pointOf(d);
      if (!p) continue;
      const dist = (p[0] - e.offsetX) ** 2 + (p[1] - e.offsetY) ** 2;
      if (dist < bestDist) {
        best = [id, d];
        bestDist = dist;
      }
    }
    if (!best) {
      tip.hidden = true;
      return;
    }
    const [id, d] = best;
    tip.textContent = `Driver ${id} · ${d.status}${d.vehicle_type ? ` · ${d.vehicle_type}` : ''}${d.booking_id ? ` · booking #${d.booking_id}` : ''}`;
    tip.style.left = `${e.offsetX}px`;
    tip.style.top = `${e.offsetY}px`;
    tip.hidden = false;
  });
  canvas.addEventListener('mouseleave', () => {
    $('tooltip').hidden = true;
  });
  new ResizeObserver(() => {
    dirty.map = true;
    schedule();
  }).observe(canvas);

  // ---- controls -----------------------------------------------------------

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    attempt = 0;
    connect();
  });
  $('change-token').addEventListener('click', () => {
    askForToken('Paste another admin token.', 'info');
  });
  window.addEventListener('hashchange', () => {
    if (new URLSearchParams(location.hash.slice(1)).has('token')) connect();
  });

  // For the browser test: a plain copy of what the page shows.
  window.opsState = () => ({
    connection: state.connection,
    message: state.message,
    drivers: Object.fromEntries([...state.drivers].map(([id, d]) => [id, { ...d, point: pointOf(d) }])),
    bookings: Object.fromEntries([...state.bookings].map(([id, b]) => [id, { status: b.status, history: [...b.history] }])),
    events: shownEvents.map((e) => e.text),
  });

  schedule();
  connect();
})();
