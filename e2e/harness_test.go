package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/cachepool/cachepool/system"
)

// pool is a whole cachepool system running in this test process.
type pool struct {
	info   system.Info
	cfg    system.Config
	cancel context.CancelFunc
	done   chan error
	http   *http.Client
}

// testConfig is the documented defaults with random ports, a temp data dir
// and intervals short enough for a test.
func testConfig(t testing.TB) system.Config {
	cfg := system.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATSListen = "127.0.0.1:0"
	cfg.ReportInterval = 200 * time.Millisecond
	cfg.Heartbeat = 300 * time.Millisecond
	cfg.StatsBucket = time.Second
	cfg.ScalerTick = time.Second
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CACHEPOOL_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startPool runs system.Up and waits until it reports ready. The pool is
// stopped (and its clean return checked) in t.Cleanup unless stopped before.
func startPool(t testing.TB, cfg system.Config) *pool {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{cfg: cfg, cancel: cancel, done: make(chan error, 1),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	ready := make(chan system.Info, 1)
	go func() { p.done <- system.Up(ctx, cfg, testLogger(t), func(i system.Info) { ready <- i }) }()
	select {
	case p.info = <-ready:
	case err := <-p.done:
		cancel()
		t.Fatalf("system did not start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("system not ready within 60s")
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop cancels the system and requires a clean return.
func (p *pool) stop(t testing.TB) {
	t.Helper()
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("system.Up returned %v after cancel, want nil", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("system did not stop within 60s")
	}
}

// envelope is the edge's JSON answer.
type envelope struct {
	Success string          `json:"success"`
	Key     []string        `json:"key"`
	Keys    []string        `json:"keys"`
	Content json.RawMessage `json:"content"`
	Error   struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	NumNodes *int `json:"numNodes"`
}

func (p *pool) do(t testing.TB, method, path string, body io.Reader, contentType string) (int, envelope, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, p.info.HTTPURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if p.cfg.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.AdminToken)
	}
	resp, err := p.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env envelope
	_ = json.Unmarshal(raw, &env)
	return resp.StatusCode, env, raw
}

func (p *pool) jsonDo(t testing.TB, method, path string, body any) (int, envelope) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	code, env, _ := p.do(t, method, path, r, "application/json")
	return code, env
}

// upload posts one image; it returns the status and envelope.
func (p *pool) upload(t testing.TB, key string, img []byte) (int, envelope) {
	t.Helper()
	body, ct := multipartBody(t, map[string]string{"key": key}, "file", "image.png", img)
	code, env, _ := p.do(t, http.MethodPost, "/api/upload", body, ct)
	return code, env
}

// uploadErr is upload for goroutines other than the test's: it never fails the test.
func (p *pool) uploadErr(key string, img []byte) error {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("key", key)
	fw, _ := w.CreateFormFile("file", "image.png")
	_, _ = fw.Write(img)
	_ = w.Close()
	req, _ := http.NewRequest(http.MethodPost, p.info.HTTPURL+"/api/upload", &buf)
	req.Header.Set("Content-Type", w.FormDataContentType())
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("upload %s: %d %s", key, resp.StatusCode, b)
	}
	return nil
}

// image fetches the raw bytes of key (never fails the test: usable off the test goroutine).
func (p *pool) image(key string) (int, []byte, error) {
	resp, err := p.http.Get(p.info.HTTPURL + "/api/image/" + key)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func multipartBody(t testing.TB, fields map[string]string, fileField, fileName string, file []byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if fileField != "" {
		fw, err := w.CreateFormFile(fileField, fileName)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write(file)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, w.FormDataContentType()
}

// pngImage returns a small, valid PNG whose pixels encode n, so every n
// gives different bytes and the bytes tell which upload they came from.
func pngImage(n int, size int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for i := 0; i < size*size; i++ {
		img.Pix[4*i] = byte(n)
		img.Pix[4*i+1] = byte(n >> 8)
		img.Pix[4*i+2] = byte(n >> 16)
		img.Pix[4*i+3] = 255
	}
	img.Set(0, 0, color.RGBA{1, 2, 3, 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// pngIndex reads back the n that pngImage encoded.
func pngIndex(b []byte) (int, error) {
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	r, g, bl, _ := img.At(1, 0).RGBA()
	return int(r>>8) | int(g>>8)<<8 | int(bl>>8)<<16, nil
}
