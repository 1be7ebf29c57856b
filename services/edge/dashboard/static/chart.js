// chart.js — a tiny dependency-free SVG line chart for the cachepool dashboard.
//
//   const c = CPChart.line(container, {format: v => v + ' B', integer: false, step: false, min: 0, max: null, height: 170});
//   c.update({times: [Date|string...], series: [{name, color, values: [number|null...]}]});
//
// Guarantees: null (or undefined / NaN) values are gaps (the line breaks, an
// isolated point is drawn as a dot); the container gets data-points = the
// number of drawn values, so a test can wait for data; the chart redraws on
// resize; hovering shows every series' value at the nearest time. It never
// throws on empty or ragged input (missing values are gaps).
(function (global) {
  'use strict';

  const NS = 'http://www.w3.org/2000/svg';
  const PAD = {top: 12, right: 14, bottom: 24, left: 56};

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function isNum(v) {
    return typeof v === 'number' && isFinite(v);
  }

  // niceStep returns a 1/2/2.5/5 × 10^k step giving about `count` intervals over span.
  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (raw <= m * mag) return m * mag;
    }
    return 10 * mag;
  }

  function ticks(lo, hi, integer) {
    if (!(hi > lo)) hi = lo + (integer ? 1 : 1);
    let step = niceStep(hi - lo, 4);
    if (integer) step = Math.max(1, Math.round(step));
    const start = Math.floor(lo / step) * step;
    const end = Math.ceil(hi / step) * step;
    const out = [];
    for (let v = start; v <= end + step / 1e6; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function clock(t) {
    const p = (n) => String(n).padStart(2, '0');
    return p(t.getHours()) + ':' + p(t.getMinutes());
  }

  function clockSeconds(t) {
    return clock(t) + ':' + String(t.getSeconds()).padStart(2, '0');
  }

  function line(container, opts) {
    opts = Object.assign({format: String, integer: false, step: false, min: 0, max: null, empty: 'No data yet'}, opts || {});
    container.classList.add('cpchart');
    const svg = el('svg', {class: 'cpchart-svg', role: 'img', 'aria-label': opts.label || 'chart'}, container);
    const tip = document.createElement('div');
    tip.className = 'cpchart-tip';
    tip.hidden = true;
    container.appendChild(tip);
    const legend = document.createElement('div');
    legend.className = 'cpchart-legend';
    container.appendChild(legend);
    let data = {times: [], series: []};
    let geom = null;

    function render() {
      const w = Math.max(120, container.clientWidth);
      const h = Math.max(80, opts.height || container.clientHeight || 160);
      svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
      svg.setAttribute('width', w);
      svg.setAttribute('height', h);
      while (svg.firstChild) svg.removeChild(svg.firstChild);

      const times = data.times.map((t) => (t instanceof Date ? t : new Date(t)));
      const n = times.length;
      let lo = Infinity;
      let hi = -Infinity;
      let drawn = 0;
      for (const s of data.series) {
        for (let i = 0; i < n; i++) {
          const v = s.values[i];
          if (!isNum(v)) continue;
          drawn++;
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
      container.dataset.points = String(drawn);
      legend.textContent = '';
      if (data.series.length > 1) {
        for (const s of data.series) {
          const item = document.createElement('span');
          const sw = document.createElement('i');
          sw.style.background = s.color;
          item.appendChild(sw);
          item.appendChild(document.createTextNode(s.name));
          legend.appendChild(item);
        }
      }

      const x0 = PAD.left;
      const x1 = w - PAD.right;
      const y0 = h - PAD.bottom;
      const y1 = PAD.top;
      if (drawn === 0) {
        geom = null;
        el('line', {x1: x0, x2: x1, y1: y0, y2: y0, class: 'cpchart-axis'}, svg);
        const t = el('text', {x: (x0 + x1) / 2, y: (y0 + y1) / 2, class: 'cpchart-empty', 'text-anchor': 'middle'}, svg);
        t.textContent = opts.empty;
        return;
      }
      if (isNum(opts.min)) lo = Math.min(lo, opts.min);
      if (isNum(opts.max)) hi = Math.max(hi, opts.max);
      const yt = ticks(lo, hi, opts.integer);
      const ylo = yt[0];
      const yhi = yt[yt.length - 1];
      const tlo = times[0].getTime();
      const thi = times[n - 1].getTime();
      const xOf = (i) => (n === 1 || thi === tlo ? (x0 + x1) / 2 : x0 + ((times[i].getTime() - tlo) / (thi - tlo)) * (x1 - x0));
      const yOf = (v) => y0 - ((v - ylo) / (yhi - ylo || 1)) * (y0 - y1);

      for (const v of yt) {
        const y = yOf(v);
        el('line', {x1: x0, x2: x1, y1: y, y2: y, class: 'cpchart-grid'}, svg);
        const lab = el('text', {x: x0 - 8, y: y + 4, 'text-anchor': 'end', class: 'cpchart-label'}, svg);
        lab.textContent = opts.format(v);
      }
      // Spans under 10 minutes (second-long buckets) label seconds too.
      const fine = thi - tlo < 10 * 60 * 1000 && n > 1;
      // About one time label per 110 px, always including the last.
      const labels = Math.max(1, Math.min(n, Math.floor((x1 - x0) / 110)));
      const every = Math.max(1, Math.ceil(n / labels));
      for (let i = n - 1; i >= 0; i -= every) {
        const x = xOf(i);
        const lab = el('text', {x: x, y: h - 6, 'text-anchor': i === n - 1 && n > 1 ? 'end' : 'middle', class: 'cpchart-label'}, svg);
        lab.textContent = fine ? clockSeconds(times[i]) : clock(times[i]);
      }
      el('line', {x1: x0, x2: x1, y1: y0, y2: y0, class: 'cpchart-axis'}, svg);

      data.series.forEach((s, k) => {
        // Split into runs of consecutive values; each run is one path.
        let run = [];
        const runs = [];
        for (let i = 0; i < n; i++) {
          if (isNum(s.values[i])) {
            run.push([xOf(i), yOf(s.values[i])]);
          } else if (run.length) {
            runs.push(run);
            run = [];
          }
        }
        if (run.length) runs.push(run);
        for (const r of runs) {
          if (r.length === 1) {
            el('circle', {cx: r[0][0], cy: r[0][1], r: 3, fill: s.color, class: 'point'}, svg);
            continue;
          }
          // With opts.step the value holds until the next point (a count that jumps).
          const d = r.map((p, i) => {
            const xy = p[0].toFixed(1) + ',' + p[1].toFixed(1);
            if (!i) return 'M' + xy;
            return opts.step ? 'H' + p[0].toFixed(1) + 'V' + p[1].toFixed(1) : 'L' + xy;
          }).join('');
          if (data.series.length === 1) {
            const area = d + 'L' + r[r.length - 1][0].toFixed(1) + ',' + y0 + 'L' + r[0][0].toFixed(1) + ',' + y0 + 'Z';
            el('path', {d: area, fill: s.color, class: 'cpchart-area'}, svg);
          }
          el('path', {d: d, stroke: s.color, class: 'series series-' + k}, svg);
        }
        // Mark the newest value.
        for (let i = n - 1; i >= 0; i--) {
          if (isNum(s.values[i])) {
            el('circle', {cx: xOf(i), cy: yOf(s.values[i]), r: 3.5, fill: s.color, class: 'point last'}, svg);
            break;
          }
        }
      });
      geom = {times, n, xOf, yOf, x0, x1, y0, y1};
      el('line', {class: 'cpchart-cursor', x1: 0, x2: 0, y1: y1, y2: y0, visibility: 'hidden'}, svg);
    }

    function nearest(px) {
      let best = 0;
      let bd = Infinity;
      for (let i = 0; i < geom.n; i++) {
        const d = Math.abs(geom.xOf(i) - px);
        if (d < bd) {
          bd = d;
          best = i;
        }
      }
      return best;
    }

    svg.addEventListener('mousemove', (ev) => {
      if (!geom) return;
      const box = svg.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * Number(svg.getAttribute('width'));
      const i = nearest(px);
      const cursor = svg.querySelector('.cpchart-cursor');
      const x = geom.xOf(i);
      cursor.setAttribute('x1', x);
      cursor.setAttribute('x2', x);
      cursor.setAttribute('visibility', 'visible');
      tip.textContent = '';
      const head = document.createElement('div');
      head.className = 'cpchart-tip-time';
      head.textContent = clockSeconds(geom.times[i]);
      tip.appendChild(head);
      for (const s of data.series) {
        const row = document.createElement('div');
        const sw = document.createElement('i');
        sw.style.background = s.color;
        row.appendChild(sw);
        const v = s.values[i];
        row.appendChild(document.createTextNode((data.series.length > 1 ? s.name + ': ' : '') + (isNum(v) ? opts.format(v) : '—')));
        tip.appendChild(row);
      }
      tip.hidden = false;
      const left = (x / Number(svg.getAttribute('width'))) * box.width;
      tip.style.left = Math.min(Math.max(0, left + 10), box.width - tip.offsetWidth) + 'px';
    });
    svg.addEventListener('mouseleave', () => {
      tip.hidden = true;
      const cursor = svg.querySelector('.cpchart-cursor');
      if (cursor) cursor.setAttribute('visibility', 'hidden');
    });

    if (typeof ResizeObserver === 'function') {
      let lastW = 0;
      new ResizeObserver(() => {
        if (container.clientWidth !== lastW) {
          lastW = container.clientWidth;
          render();
        }
      }).observe(container);
    }
    render();
    return {
      update(next) {
        data = {times: (next && next.times) || [], series: (next && next.series) || []};
        render();
      },
    };
  }

  global.CPChart = {line, niceStep, ticks};
})(window);
