package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/system"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// TestDashboardInChromium drives the dashboard of a whole running system
// (system.Up, everything in this process) in headless Chromium: the charts
// draw the uploaded and read images, +1 grows the node table, an invalid
// automatic parameter shows the server's message and changes nothing, and
// clear-cache empties every node. It keeps a screenshot as an artifact (in
// $CACHEPOOL_ARTIFACTS when set).
func TestDashboardInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("skipping the dashboard browser test: Debian's chromium is not installed " +
				"(apt-get install -y chromium); CI installs it and runs this test")
		}
		t.Fatalf("CI is set but chromium is not on PATH (.ci/run installs it): %v", err)
	}

	base := dashStartSystem(t)
	api := dashAPI{base: base}

	// Give the charts something to draw: uploads, then reads (hits).
	const images = 12
	for i := range images {
		if err := api.upload(fmt.Sprintf("dash-%02d", i), dashImage(4096+i)); err != nil {
			t.Fatalf("upload: %v", err)
		}
	}
	for range 2 {
		for i := range images {
			if err := api.get(fmt.Sprintf("/api/key/dash-%02d", i), nil); err != nil {
				t.Fatalf("read: %v", err)
			}
		}
	}
	dashEventually(t, 30*time.Second, "the stats series to count the reads", func() error {
		var s struct {
			MissRate []*float64 `json:"miss_rate"`
			Requests []float64  `json:"number_of_requests_served_per_minute"`
		}
		if err := api.get("/api/manager/aggregate_stats", &s); err != nil {
			return err
		}
		for i, r := range s.Requests {
			if r > 0 && s.MissRate[i] != nil {
				return nil
			}
		}
		return fmt.Errorf("no bucket with requests yet: %v", s.Requests)
	})

	b := dashBrowser(t, chromium)
	if err := chromedp.Do(b.ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}

	// The charts render with data.
	for _, id := range []string{"chart-nodes", "chart-rates", "chart-requests", "chart-items", "chart-bytes"} {
		b.waitFor(t, id+" draws data points", fmt.Sprintf(
			`Number(document.getElementById(%q).dataset.points) > 0 && document.querySelectorAll('#%s svg .series, #%s svg circle.point').length > 0`,
			id, id, id), 30*time.Second)
	}

	// +1 changes the node table from one row to two.
	rows := `document.querySelectorAll('#node-table tbody tr[data-node]').length`
	b.waitFor(t, "the node table to list the one node", rows+` === 1`, 30*time.Second)
	b.click(t, "#btn-grow")
	b.waitFor(t, "the node table to list two nodes", rows+` === 2`, 60*time.Second)
	b.waitFor(t, "the resize request to show as applied", `!!document.querySelector('#resize-status [data-status="applied"]')`, 60*time.Second)
	var size struct {
		Size int `json:"size"`
	}
	if err := api.get("/api/manager/poolsize", &size); err != nil || size.Size != 2 {
		t.Errorf("after +1 the pool size is %d (%v), want 2", size.Size, err)
	}

	// An invalid automatic parameter shows the server's message and changes nothing.
	var before, after map[string]any
	if err := api.get("/api/manager/poolsize/config", &before); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the automatic form to be filled from the server", `document.getElementById('auto-expand').value !== ''`, 30*time.Second)
	// Empty the field (chromedp.Clear leaves a number input's value), then type.
	if err := chromedp.Do(b.ctx,
		chromedp.SetValue(chromedp.ID("auto-expand"), ""),
		chromedp.SendKeys(chromedp.ID("auto-expand"), "0.5"),
	); err != nil {
		t.Fatalf("type into #auto-expand: %v", err)
	}
	if v := b.value(t, "#auto-expand"); v != "0.5" {
		t.Fatalf("#auto-expand holds %q after typing, want 0.5", v)
	}
	b.click(t, "#auto-save")
	b.waitFor(t, "#auto-error to show the server's message",
		`(() => { const e = document.getElementById('auto-error'); return !e.hidden && e.textContent.includes('expand_ratio') && e.textContent.includes('0.5'); })()`,
		30*time.Second)
	msg := b.text(t, "#auto-error")
	t.Logf("#auto-error: %q", msg)
	if err := api.get("/api/manager/poolsize/config", &after); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("an invalid parameter changed the config:\nbefore %v\nafter  %v", before, after)
	}

	// Clear-cache (confirmed in the page's dialog) empties the item count.
	items := `[...document.querySelectorAll('#node-table tbody tr[data-node] td.items')].map(td => Number(td.textContent.replace(/[^0-9]/g, '')))`
	b.waitFor(t, "the node table to count cached items", items+`.reduce((a, b) => a + b, 0) > 0`, 30*time.Second)
	b.click(t, "#btn-clear-cache")
	b.waitFor(t, "the confirmation dialog", `document.getElementById('confirm').open`, 10*time.Second)
	b.click(t, "#confirm-yes")
	b.waitFor(t, "every node's item count to be 0", `(() => { const v = `+items+`; return v.length === 2 && v.every(n => n === 0); })()`, 30*time.Second)
	var nodes struct {
		Nodes []struct {
			ID    string `json:"id"`
			Items int64  `json:"items"`
		} `json:"nodes"`
	}
	if err := api.get("/api/manager/pool_node_list", &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Nodes {
		if n.Items != 0 {
			t.Errorf("after clear-cache node %s holds %d items (API), want 0", n.ID, n.Items)
		}
	}

	b.screenshot(t, "dashboard.png")
	b.noExceptions(t)
}

// dashStartSystem runs system.Up with second-long intervals and returns the
// edge's base URL. Cleanup stops it and checks that it returned nil.
func dashStartSystem(t *testing.T) string {
	t.Helper()
	cfg := system.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATSListen = "127.0.0.1:0"
	cfg.ReportInterval = 200 * time.Millisecond
	cfg.Heartbeat = 500 * time.Millisecond
	cfg.StatsBucket = time.Second
	cfg.ScalerTick = time.Second
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("CACHEPOOL_TEST_LOG") == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan system.Info, 1)
	done := make(chan error, 1)
	go func() { done <- system.Up(ctx, cfg, log, func(i system.Info) { ready <- i }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("system.Up returned %v after cancel, want nil", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("system.Up did not return within 60s of cancel")
		}
	})
	select {
	case info := <-ready:
		t.Logf("system up: %s (NATS %s)", info.HTTPURL, info.NATSURL)
		return info.HTTPURL
	case err := <-done:
		t.Fatalf("system.Up returned before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("system.Up was not ready within 60s")
	}
	return ""
}

// dashEventually calls f until it returns nil or timeout passes.
func dashEventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// dashImage returns n bytes that sniff as a PNG image.
func dashImage(n int) []byte {
	b := bytes.Repeat([]byte{0x5a}, n)
	copy(b, "\x89PNG\r\n\x1a\n")
	return b
}

// dashAPI is a small client of the edge's HTTP API.
type dashAPI struct{ base string }

func (a dashAPI) upload(key string, image []byte) error {
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	if err := w.WriteField("key", key); err != nil {
		return err
	}
	part, err := w.CreateFormFile("file", key+".png")
	if err != nil {
		return err
	}
	if _, err := part.Write(image); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	resp, err := http.Post(a.base+"/api/upload", w.FormDataContentType(), &body)
	if err != nil {
		return err
	}
	return dashDecode(resp, nil)
}

// get GETs path and decodes the envelope's content (or, for the front-end
// API, the whole envelope) into v when v is not nil.
func (a dashAPI) get(path string, v any) error {
	resp, err := http.Get(a.base + path)
	if err != nil {
		return err
	}
	return dashDecode(resp, v)
}

func dashDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Success string          `json:"success"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s: not JSON: %v: %.200s", resp.Request.URL.Path, err, b)
	}
	if resp.StatusCode >= 300 || env.Success != "true" {
		return fmt.Errorf("%s: status %d: %.300s", resp.Request.URL.Path, resp.StatusCode, b)
	}
	if v == nil || len(env.Content) == 0 {
		return nil
	}
	return json.Unmarshal(env.Content, v)
}

// dashBrowserT is one headless Chromium tab plus the page's uncaught exceptions.
type dashBrowserT struct {
	ctx        context.Context
	mu         sync.Mutex
	exceptions []string
}

// dashBrowser starts Chromium with a fresh profile. Cleanup saves a
// screenshot when the test failed, then closes the browser (before the
// system stops: cleanups run last-in first-out).
func dashBrowser(t *testing.T, chromium string) *dashBrowserT {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1400),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &dashBrowserT{}
	// The listener runs on chromedp's goroutines: it only records.
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			d := e.ExceptionDetails
			text := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				text += ": " + d.Exception.Description
			}
			b.mu.Lock()
			b.exceptions = append(b.exceptions, text)
			b.mu.Unlock()
		}
	}))
	b.ctx = ctx
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	t.Cleanup(func() {
		if t.Failed() {
			b.screenshot(t, "dashboard-failed.png")
		}
	})
	return b
}

// waitFor polls the JavaScript expression in the page until it is truthy.
func (b *dashBrowserT) waitFor(t *testing.T, what, expr string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		t.Fatalf("waiting for %s: %v\n(expression: %s)\npage state: %s", what, err, expr, b.state())
	}
}

// state describes the page for a failure message.
func (b *dashBrowserT) state() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		banner: document.getElementById('banner').textContent,
		nodes: [...document.querySelectorAll('#node-table tbody tr')].map(r => r.textContent),
		resize: document.getElementById('resize-status').textContent,
		autoError: document.getElementById('auto-error').textContent,
		toasts: [...document.querySelectorAll('.toast')].map(e => e.textContent),
	})`))
	if err != nil {
		return "(unavailable: " + err.Error() + ")"
	}
	return s
}

func (b *dashBrowserT) click(t *testing.T, sel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("click %s: %v\npage state: %s", sel, err, b.state())
	}
}

func (b *dashBrowserT) value(t *testing.T, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("value of %s: %v", sel, err)
	}
	return s
}

func (b *dashBrowserT) text(t *testing.T, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// screenshot saves the full page as name in $CACHEPOOL_ARTIFACTS (or a
// temporary directory) and logs where.
func (b *dashBrowserT) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("CACHEPOOL_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("artifacts dir: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", path)
}

// noExceptions fails the test if the page threw an uncaught exception.
func (b *dashBrowserT) noExceptions(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.exceptions) > 0 {
		t.Errorf("the page threw %d uncaught exceptions: %s", len(b.exceptions), strings.Join(b.exceptions, "; "))
	}
}
