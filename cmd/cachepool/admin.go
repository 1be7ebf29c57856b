package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/system"
	"github.com/nats-io/nats.go"
)

func nodeID(s string) contracts.NodeID { return contracts.NodeID(s) }

// adminConn connects to --nats, or to the URL a local `up` left in its data dir.
func adminConn(ctx context.Context, cfg system.Config, dataDir string) (*nats.Conn, error) {
	url := cfg.NATSURL
	if url == "" {
		b, err := os.ReadFile(filepath.Join(dataDir, urlFile))
		if err != nil {
			return nil, usageError{fmt.Sprintf("no --nats given and no running `cachepool up` found in %s (%v)", dataDir, err)}
		}
		url = strings.TrimSpace(string(b))
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return bus.Connect(cctx, url, "cachepool-cli", nil, natsOptions(cfg)...)
}

func cmdAdmin(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := system.Defaults()
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsFlags(fs, &cfg)
	dataDir := fs.String("data", "./data", "data dir of a local `cachepool up` (to find its NATS URL)")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for an answer")
	to := fs.Int("to", 0, "pool resize: the absolute target size")
	capacity := fs.Float64("capacity", 0, "config: cache capacity in MB")
	policy := fs.String("policy", "", "config: replacement policy lru or random")
	maxMiss := fs.Float64("max-miss", -1, "mode automatic: max_miss_rate_threshold")
	minMiss := fs.Float64("min-miss", -1, "mode automatic: min_miss_rate_threshold")
	expand := fs.Float64("expand", -1, "mode automatic: expand_ratio")
	shrink := fs.Float64("shrink", -1, "mode automatic: shrink_ratio")
	all := fs.Bool("all", false, "events: include heartbeats and node reports")
	// Positional words may come before flags: split them off first.
	var words []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "--") && !(strings.HasPrefix(args[0], "-") && !isSignedInt(args[0])) {
		words, args = append(words, args[0]), args[1:]
	}
	if err := parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	words = append(words, fs.Args()...)
	nc, err := adminConn(ctx, cfg, *dataDir)
	if err != nil {
		return err
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	out := printer{w: stdout, json: *asJSON}

	switch cmd + " " + first(words) {
	case "pool status", "pool ":
		st, err := bus.Request[contracts.PoolStatus](rctx, nc, contracts.PoolStatusSubject, nil)
		if err != nil {
			return err
		}
		return out.status(st)
	case "pool nodes":
		st, err := bus.Request[contracts.PoolStatus](rctx, nc, contracts.PoolStatusSubject, nil)
		if err != nil {
			return err
		}
		return out.nodes(st.Nodes)
	case "pool resize":
		req := contracts.ResizeRequest{Target: *to, WaitMS: timeout.Milliseconds()}
		if len(words) > 1 {
			switch words[1] {
			case "+1", "increase", "up":
				req.Change = "increase"
			case "-1", "decrease", "down":
				req.Change = "decrease"
			default:
				return usageError{fmt.Sprintf("pool resize takes +1, -1 or --to N, got %q", words[1])}
			}
		}
		if err := req.Validate(); err != nil {
			return usageError{"pool resize: " + err.Error()}
		}
		st, err := bus.Request[contracts.ResizeRequestState](rctx, nc, contracts.PoolResize, req)
		if err != nil {
			return err
		}
		if err := out.request(st); err != nil {
			return err
		}
		if st.Status == contracts.StateRejected || st.Status == contracts.StateFailed {
			return fmt.Errorf("resize %s: %s", st.Status, st.Reason)
		}
		return nil
	case "pool requests":
		l, err := bus.Request[contracts.ResizeRequestList](rctx, nc, contracts.PoolRequests, nil)
		if err != nil {
			return err
		}
		return out.requests(l.Requests)
	case "stats ":
		s, err := bus.Request[contracts.StatsSeries](rctx, nc, contracts.StatsSeriesSubject, nil)
		if err != nil {
			return err
		}
		return out.stats(s)
	case "config ":
		if *capacity == 0 && *policy == "" {
			c, err := bus.Request[contracts.CacheConfig](rctx, nc, contracts.PoolGetCacheConfig, nil)
			if err != nil {
				return err
			}
			return out.value(c, fmt.Sprintf("capacity %v MB, policy %s\n", c.CapacityMB, c.Policy))
		}
		cur, err := bus.Request[contracts.CacheConfig](rctx, nc, contracts.PoolGetCacheConfig, nil)
		if err != nil {
			return err
		}
		if *capacity != 0 {
			cur.CapacityMB = *capacity
		}
		if *policy != "" {
			cur.Policy = *policy
		}
		c, err := bus.Request[contracts.CacheConfig](rctx, nc, contracts.PoolSetCacheConfig, cur)
		if err != nil {
			return err
		}
		return out.value(c, fmt.Sprintf("applied: capacity %v MB, policy %s\n", c.CapacityMB, c.Policy))
	case "mode manual":
		m, err := bus.Request[contracts.ModeConfig](rctx, nc, contracts.PoolSetMode, contracts.SetModeRequest{Mode: contracts.ModeManual})
		if err != nil {
			return err
		}
		return out.value(m, "mode: manual (automatic parameters kept)\n")
	case "mode automatic":
		m, err := bus.Request[contracts.ModeConfig](rctx, nc, contracts.PoolMode, nil)
		if err != nil {
			return err
		}
		p := m.Params
		for _, f := range []struct {
			v   float64
			dst *float64
		}{{*maxMiss, &p.MaxMissRate}, {*minMiss, &p.MinMissRate}, {*expand, &p.ExpandRatio}, {*shrink, &p.ShrinkRatio}} {
			if f.v >= 0 {
				*f.dst = f.v
			}
		}
		m, err = bus.Request[contracts.ModeConfig](rctx, nc, contracts.PoolSetAuto, p)
		if err != nil {
			return err
		}
		return out.value(m, fmt.Sprintf("mode: automatic, max miss %v, min miss %v, expand %v, shrink %v\n",
			m.Params.MaxMissRate, m.Params.MinMissRate, m.Params.ExpandRatio, m.Params.ShrinkRatio))
	case "clear cache":
		r, err := bus.Request[contracts.ClearReply](rctx, nc, contracts.PoolClearCache, nil)
		if err != nil {
			return err
		}
		return out.value(r, fmt.Sprintf("cleared %d items (%d bytes) from %d nodes\n", r.Items, r.Bytes, r.Nodes))
	case "clear data":
		r, err := bus.Request[contracts.ClearAllReply](rctx, nc, contracts.PoolClearData, nil)
		if err != nil {
			return err
		}
		return out.value(r, fmt.Sprintf("deleted %d rows, %d objects, %d cached items\n", r.Rows, r.Objects, r.CachedItems))
	case "events ":
		return watchEvents(ctx, nc, stdout, *all)
	case "scaler decisions":
		l, err := bus.Request[contracts.DecisionList](rctx, nc, contracts.ScalerDecisions, nil)
		if err != nil {
			return err
		}
		return out.decisions(l.Decisions)
	}
	return usageError{fmt.Sprintf("unknown command: cachepool %s %s (see cachepool help)", cmd, strings.Join(words, " "))}
}

func isSignedInt(s string) bool { _, err := strconv.Atoi(s); return err == nil }

func first(words []string) string {
	if len(words) == 0 {
		return ""
	}
	return words[0]
}

// watchEvents prints every event until ctx ends.
func watchEvents(ctx context.Context, nc *nats.Conn, w io.Writer, all bool) error {
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(contracts.EventsFilter, ch)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "watching %s (Ctrl-C to stop)\n", contracts.EventsFilter)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			if !all && (strings.Contains(m.Subject, ".evt.heartbeat.") || strings.Contains(m.Subject, ".evt.report.")) {
				continue
			}
			fmt.Fprintf(w, "%s %s %s\n", time.Now().UTC().Format(time.RFC3339), m.Subject, compactJSON(m.Data))
		}
	}
}

func compactJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func natsOptions(cfg system.Config) []nats.Option { return system.NATSOptions(cfg.NATS) }

// printer prints tables for people and JSON for scripts.
type printer struct {
	w    io.Writer
	json bool
}

func (p printer) value(v any, text string) error {
	if p.json {
		enc := json.NewEncoder(p.w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := io.WriteString(p.w, text)
	return err
}

func (p printer) status(st contracts.PoolStatus) error {
	if p.json {
		return p.value(st, "")
	}
	fmt.Fprintf(p.w, "size %d (target %d, max %d), mode %s, epoch %d, %d partitions, %d pending requests\n",
		st.Size, st.Target, st.MaxNodes, st.Mode.Mode, st.Epoch, st.Partitions, st.Pending)
	fmt.Fprintf(p.w, "cache: capacity %v MB per node, policy %s\n", st.Config.CapacityMB, st.Config.Policy)
	if st.Migration != nil && !st.Migration.Done {
		m := st.Migration
		fmt.Fprintf(p.w, "migration: %d/%d keys, %d/%d bytes\n", m.MovedKeys, m.TotalKeys, m.MovedBytes, m.TotalBytes)
	}
	return p.nodes(st.Nodes)
}

func (p printer) nodes(nodes []contracts.NodeInfo) error {
	if p.json {
		return p.value(nodes, "")
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tPARTITIONS\tITEMS\tBYTES")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", n.ID, n.State, n.Partitions, n.Items, n.Bytes)
	}
	return tw.Flush()
}

func (p printer) request(st contracts.ResizeRequestState) error {
	if p.json {
		return p.value(st, "")
	}
	fmt.Fprintf(p.w, "request %s: %s", st.RequestID, st.Status)
	if st.FromSize != 0 || st.ToSize != 0 {
		fmt.Fprintf(p.w, " (%d → %d)", st.FromSize, st.ToSize)
	}
	if st.Reason != "" {
		fmt.Fprintf(p.w, ": %s", st.Reason)
	}
	fmt.Fprintln(p.w)
	return nil
}

func (p printer) requests(l []contracts.ResizeRequestState) error {
	if p.json {
		return p.value(l, "")
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tSOURCE\tSTATUS\tFROM\tTO\tREASON")
	for _, r := range l {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", r.RequestID, r.Command.Source, r.Status, r.FromSize, r.ToSize, r.Reason)
	}
	return tw.Flush()
}

func rate(f *float64) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f", *f)
}

func (p printer) stats(s contracts.StatsSeries) error {
	if p.json {
		return p.value(s, "")
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MINUTE\tNODES\tREQ/MIN\tMISS\tHIT\tITEMS\tBYTES")
	for i, ts := range s.Timestamps {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%d\t%d\n", ts.UTC().Format(time.RFC3339), s.Nodes[i], s.RequestsPerMinute[i],
			rate(s.MissRate[i]), rate(s.HitRate[i]), s.Items[i], s.Bytes[i])
	}
	return tw.Flush()
}

func (p printer) decisions(l []contracts.ScalerDecision) error {
	if p.json {
		return p.value(l, "")
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tACTION\tNODES\tTARGET\tMISS\tREASON")
	for _, d := range l {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", d.OccurredAt.UTC().Format(time.RFC3339), d.Action, d.Nodes, d.Target, rate(d.MissRate), d.Reason)
	}
	return tw.Flush()
}
