package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// leaseHolderProc waits until one of procs holds role's lease and returns it.
func leaseHolderProc(t *testing.T, ctx context.Context, js jetstream.JetStream, role string, procs []*proc) *proc {
	t.Helper()
	var holder *proc
	bustest.Eventually(t, time.Minute, func() error {
		h, err := bus.ReadLease(ctx, js, role)
		if err != nil {
			return err
		}
		for _, p := range procs {
			if p.cmd.Process.Pid == h.PID {
				holder = p
				return nil
			}
		}
		return fmt.Errorf("lease %s held by pid %d, not one of ours", role, h.PID)
	})
	return holder
}

// pingCount counts the instances of a micro service answering a ping.
func pingCount(t *testing.T, nc *nats.Conn, service string) int {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING."+service, inbox, nil); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := sub.NextMsg(300 * time.Millisecond); err != nil {
			return n
		}
		n++
	}
}

func without(procs []*proc, p *proc) []*proc {
	var out []*proc
	for _, q := range procs {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// putImage stores key's image through the store (which fills its owner).
func putImage(ctx context.Context, nc *nats.Conn, key string, img []byte) error {
	msg := &nats.Msg{Subject: contracts.StorePut, Data: img, Header: nats.Header{}}
	msg.Header.Set(contracts.HdrKey, key)
	msg.Header.Set(contracts.HdrContentType, "image/png")
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := bus.RequestMsg(rctx, nc, msg)
	return err
}

// TestActiveManagerKilledMidMigrationStandbyFinishes runs two manager
// processes (one active, one standby) over four standby cache nodes and a
// store, queues resizes, and SIGKILLs the active manager while a migration
// is in flight, several times (each killed manager is replaced by a new
// standby), while keys are being overwritten. Every command ends terminal
// exactly once, the pool size is the serial replay of the applied ones, and
// every key sits on its owner with its latest bytes.
func TestActiveManagerKilledMidMigrationStandbyFinishes(t *testing.T) {
	if testing.Short() {
		t.Skip("process failover test")
	}
	srv := bustest.RunServer(t)
	url := srv.ClientURL()
	nc := bustest.Connect(t, srv)
	data := t.TempDir()
	common := []string{"--nats", url, "--heartbeat", "300ms", "--report-interval", "1s", "--log-level", "info"}

	const maxNodes = 4
	for i := 1; i <= maxNodes; i++ {
		startProc(t, append([]string{"serve", "cachenode", "--standby", "--id", fmt.Sprintf("sb-%d", i)}, common...)...)
	}
	startProc(t, append([]string{"serve", "store", "--data", data}, common...)...)
	managerArgs := append([]string{"serve", "manager", "--provisioner", "standby", "--max-nodes", strconv.Itoa(maxNodes), "--nodes", "1"}, common...)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	js, _ := jetstream.New(nc)
	managers := []*proc{startProc(t, managerArgs...)}
	waitTable(t, ctx, js, func(tab contracts.PartitionTable) bool { return len(tab.Nodes) == 1 })
	first := leaseHolderProc(t, ctx, js, "manager", managers)
	managers = append(managers, startProc(t, managerArgs...))

	const keys = 200
	version := make([]int, keys) // the image number of each key's latest acknowledged put
	for i := range keys {
		version[i] = i
		if err := putImage(ctx, nc, fmt.Sprintf("k-%d", i), pngImage(i, 4)); err != nil {
			t.Fatalf("store put: %v", err)
		}
	}
	// The standby serves nothing and does not take the lease.
	if h := leaseHolderProc(t, ctx, js, "manager", managers); h != first {
		t.Fatal("the lease moved to the standby while the active manager ran")
	}
	if n := pingCount(t, nc, contracts.ServiceManager); n != 1 {
		t.Fatalf("%d managers answer a ping, want 1", n)
	}

	// Terminal request events, to time the takeovers.
	var evMu sync.Mutex
	var terminalAt []time.Time
	sub, err := nc.Subscribe(contracts.EvtRequest, func(m *nats.Msg) {
		var s contracts.ResizeRequestState
		if json.Unmarshal(m.Data, &s) == nil && contracts.Terminal(s.Status) {
			evMu.Lock()
			terminalAt = append(terminalAt, time.Now())
			evMu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	firstTerminalAfter := func(at time.Time) time.Time {
		evMu.Lock()
		defer evMu.Unlock()
		for _, ts := range terminalAt {
			if ts.After(at) {
				return ts
			}
		}
		return time.Time{}
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	const cmds = 60
	ids := queueResizes(t, ctx, js, rng, "fo", cmds)

	// Overwrite half of the keys while the queue and the kills run.
	writerDone := make(chan error, 1)
	var vmu sync.Mutex
	go func() {
		var firstErr error
		for i := 0; i < keys/2 && ctx.Err() == nil; i++ {
			img := 1000 + i
			err := putImage(ctx, nc, fmt.Sprintf("k-%d", i), pngImage(img, 4))
			vmu.Lock()
			if err == nil {
				version[i] = img
			} else {
				version[i] = -1 // unknown which version won
				if firstErr == nil {
					firstErr = fmt.Errorf("overwrite k-%d: %w", i, err)
				}
			}
			vmu.Unlock()
			time.Sleep(20 * time.Millisecond) // spread the writes over the run
		}
		writerDone <- firstErr
	}()

	reqKV, err := js.KeyValue(ctx, contracts.BucketRequests)
	if err != nil {
		t.Fatal(err)
	}
	poolKV, err := js.KeyValue(ctx, contracts.BucketPool)
	if err != nil {
		t.Fatal(err)
	}
	terminal := func() int { return countTerminal(ctx, reqKV, ids) }
	inMigration := func() bool {
		e, err := poolKV.Get(ctx, contracts.KeyTable)
		if err != nil {
			return false
		}
		var tab contracts.PartitionTable
		return json.Unmarshal(e.Value(), &tab) == nil && len(tab.Previous) > 0
	}

	// Kill the active manager while a migration is in flight, up to three times.
	midMigration := 0
rounds:
	for round := 0; round < 3 && terminal() < cmds; round++ {
		active := leaseHolderProc(t, ctx, js, "manager", managers)
		w, err := poolKV.Watch(ctx, contracts.KeyTable, jetstream.UpdatesOnly())
		if err != nil {
			t.Fatal(err)
		}
		timeout := time.After(time.Minute)
		drained := time.NewTicker(500 * time.Millisecond)
	watch:
		for {
			select {
			case e := <-w.Updates():
				var tab contracts.PartitionTable
				if e != nil && json.Unmarshal(e.Value(), &tab) == nil && len(tab.Previous) > 0 {
					break watch
				}
			case <-drained.C:
				if terminal() == cmds {
					drained.Stop()
					_ = w.Stop()
					break rounds
				}
			case <-timeout:
				t.Fatal("no migration started within a minute")
			}
		}
		drained.Stop()
		_ = w.Stop()
		active.kill9()
		killed := time.Now()
		mid := inMigration()
		if mid {
			midMigration++
		}
		managers = without(managers, active)
		next := leaseHolderProc(t, ctx, js, "manager", managers)
		leased := time.Now()
		managers = append(managers, startProc(t, managerArgs...)) // the next standby
		var applied time.Time
		bustest.Eventually(t, time.Minute, func() error {
			if applied = firstTerminalAfter(leased); applied.IsZero() && terminal() < cmds {
				return fmt.Errorf("no command finished since the takeover")
			}
			return nil
		})
		took := "queue already drained"
		if !applied.IsZero() {
			took = applied.Sub(killed).Round(time.Millisecond).String()
		}
		t.Logf("round %d: active manager (pid %d) killed mid-migration=%v with %d/%d commands terminal; standby pid %d holds the lease after %v; first command finished %s after the kill",
			round, active.cmd.Process.Pid, mid, terminal(), cmds, next.cmd.Process.Pid, leased.Sub(killed).Round(time.Millisecond), took)
	}
	if midMigration == 0 {
		t.Fatal("no kill landed while a migration was in flight; the test proves little")
	}

	states := terminalRequests(t, ctx, reqKV, ids)
	size := serialReplay(t, states, 1, maxNodes)
	if err := <-writerDone; err != nil {
		t.Logf("an overwrite failed during the takeover (its key may hold either version): %v", err)
	}
	var tab contracts.PartitionTable
	waitTable(t, ctx, js, func(cur contracts.PartitionTable) bool { tab = cur; return len(cur.Previous) == 0 })
	if len(tab.Nodes) != size {
		t.Fatalf("pool has %d nodes, the accepted commands imply %d", len(tab.Nodes), size)
	}
	// Every key sits on its owner with its latest bytes: nothing stale.
	vmu.Lock()
	defer vmu.Unlock()
	overwritten := 0
	for i := range keys {
		key := fmt.Sprintf("k-%d", i)
		owner, _, _ := tab.Owner(key)
		reply, err := bus.RequestMsg(ctx, nc, &nats.Msg{Subject: contracts.NodeGet(owner), Data: []byte(key)})
		if err != nil {
			t.Fatalf("%s is not on its owner %s: %v", key, owner, err)
		}
		switch v := version[i]; {
		case v < 0:
			if !bytes.Equal(reply.Data, pngImage(i, 4)) && !bytes.Equal(reply.Data, pngImage(1000+i, 4)) {
				t.Fatalf("%s on %s is neither of its versions", key, owner)
			}
		case !bytes.Equal(reply.Data, pngImage(v, 4)):
			t.Fatalf("%s on %s is not its latest version (image %d)", key, owner, v)
		case v >= 1000:
			overwritten++
		}
	}
	t.Logf("%d commands, %d kills mid-migration, final size %d; %d keys on their owners, %d of them overwritten during the kills", cmds, midMigration, size, keys, overwritten)
}

// TestActiveScalerKilledStandbyDecides runs two scaler processes; only the
// lease holder decides. SIGKILL it: the other takes the lease and decisions
// keep appearing.
func TestActiveScalerKilledStandbyDecides(t *testing.T) {
	if testing.Short() {
		t.Skip("process failover test")
	}
	srv := bustest.RunServer(t)
	url := srv.ClientURL()
	nc := bustest.Connect(t, srv)
	common := []string{"--nats", url, "--heartbeat", "300ms", "--report-interval", "1s", "--log-level", "warn"}
	startProc(t, append([]string{"serve", "cachenode", "--standby", "--id", "sb-1"}, common...)...)
	startProc(t, append([]string{"serve", "manager", "--provisioner", "standby", "--max-nodes", "1", "--nodes", "1"}, common...)...)
	scalerArgs := append([]string{"serve", "scaler", "--scaler-tick", "200ms"}, common...)

	var evMu sync.Mutex
	var decidedAt []time.Time
	sub, err := nc.Subscribe(contracts.EvtDecision, func(*nats.Msg) {
		evMu.Lock()
		decidedAt = append(decidedAt, time.Now())
		evMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	decisionsSince := func(at time.Time) (n int, first time.Time) {
		evMu.Lock()
		defer evMu.Unlock()
		for _, ts := range decidedAt {
			if ts.After(at) {
				if n == 0 {
					first = ts
				}
				n++
			}
		}
		return n, first
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, _ := jetstream.New(nc)
	scalers := []*proc{startProc(t, scalerArgs...), startProc(t, scalerArgs...)}
	active := leaseHolderProc(t, ctx, js, "scaler", scalers)
	start := time.Now()
	bustest.Eventually(t, time.Minute, func() error {
		if n, _ := decisionsSince(start); n < 5 {
			return fmt.Errorf("%d decisions so far", n)
		}
		return nil
	})
	// The standby serves nothing.
	if n := pingCount(t, nc, contracts.ServiceScaler); n != 1 {
		t.Fatalf("%d scalers answer a ping, want 1", n)
	}

	active.kill9()
	killed := time.Now()
	next := leaseHolderProc(t, ctx, js, "scaler", without(scalers, active))
	leased := time.Now()
	bustest.Eventually(t, time.Minute, func() error {
		if n, _ := decisionsSince(leased); n < 5 {
			return fmt.Errorf("%d decisions since the takeover", n)
		}
		return nil
	})
	_, first := decisionsSince(leased)
	if n := pingCount(t, nc, contracts.ServiceScaler); n != 1 {
		t.Fatalf("%d scalers answer a ping after the takeover, want 1", n)
	}
	t.Logf("active scaler (pid %d) killed; standby pid %d holds the lease after %v; its first decision %v after the kill",
		active.cmd.Process.Pid, next.cmd.Process.Pid, leased.Sub(killed).Round(time.Millisecond), first.Sub(killed).Round(time.Millisecond))
}
