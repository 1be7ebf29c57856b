package imagestore

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/imagestore/blob"
	"github.com/cachepool/cachepool/services/imagestore/meta"
)

// silentServer accepts TCP connections and never answers (a hung S3 server).
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// TestHungBlobStoreAnswers503NamingItWithinTimeout: a blob store that
// accepts connections and never answers makes loads and puts answer 503
// naming the blob store within Timeout (not a bare "took longer" from the
// waiter, and never later than the caller's wait).
func TestHungBlobStoreAnswers503NamingItWithinTimeout(t *testing.T) {
	cfg, err := blob.ParseS3URL("s3://images?region=us-east-1&path_style=true&access_key_id=k&secret_access_key=s&endpoint=" + silentServer(t))
	if err != nil {
		t.Fatal(err)
	}
	s3, err := blob.OpenS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db, err := meta.Open(context.Background(), "sqlite", dir)
	if err != nil {
		t.Fatal(err)
	}
	// A stored key whose object the hung store holds.
	if _, err := db.Upsert(context.Background(), "k", "some-object", "image/png", 1); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "n1")
	const timeout = time.Second
	e.serve(&instance{blobs: &countingBlobs{Store: s3}, meta: db, dir: dir}, Config{Timeout: timeout})

	start := time.Now()
	_, err = e.load("k")
	took := time.Since(start)
	if codeOf(err) != contracts.CodeUnavailable || !strings.Contains(err.Error(), "blob store unavailable") {
		t.Fatalf("load with a hung blob store: %v, want 503 naming the blob store", err)
	}
	if took > timeout+time.Second {
		t.Fatalf("load answered after %v, timeout %v", took, timeout)
	}
	start = time.Now()
	_, err = e.put("k2", "image/png", []byte("x"))
	took = time.Since(start)
	if codeOf(err) != contracts.CodeUnavailable || !strings.Contains(err.Error(), "blob store unavailable") {
		t.Fatalf("put with a hung blob store: %v, want 503 naming the blob store", err)
	}
	if took > timeout+time.Second {
		t.Fatalf("put answered after %v, timeout %v", took, timeout)
	}
	if flightTimeout(DefaultTimeout) >= DefaultTimeout || DefaultTimeout >= 10*time.Second {
		t.Fatalf("a flight must end before its waiters (%v vs %v), and the store before the edge's 10 s wait", flightTimeout(DefaultTimeout), DefaultTimeout)
	}
}
