package imagestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

// nodeClient talks to cache nodes over their id-addressed subjects. Each
// request is bounded by timeout.
type nodeClient struct {
	nc      *nats.Conn
	timeout time.Duration
}

// put stores an image version on node and returns the node's answer.
func (c nodeClient) put(ctx context.Context, node contracts.NodeID, key string, version uint64, contentType string, data []byte) (contracts.PutReply, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	msg := nats.NewMsg(contracts.NodePut(node))
	msg.Header.Set(contracts.HdrKey, key)
	msg.Header.Set(contracts.HdrVersion, strconv.FormatUint(version, 10))
	msg.Header.Set(contracts.HdrContentType, contentType)
	msg.Data = data
	var rep contracts.PutReply
	reply, err := bus.RequestMsg(ctx, c.nc, msg)
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal(reply.Data, &rep); err != nil {
		return rep, fmt.Errorf("node %s: bad put reply: %w", node, err)
	}
	return rep, nil
}

// get asks node for key. ok is false on a miss; err reports a failure.
func (c nodeClient) get(ctx context.Context, node contracts.NodeID, key string) (data []byte, version uint64, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	reply, err := bus.RequestMsg(ctx, c.nc, &nats.Msg{Subject: contracts.NodeGet(node), Data: []byte(key)})
	var ce *contracts.Error
	if errors.As(err, &ce) && ce.Code == contracts.CodeNotFound {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	v, err := strconv.ParseUint(reply.Header.Get(contracts.HdrVersion), 10, 64)
	if err != nil {
		return nil, 0, false, fmt.Errorf("node %s: bad version header: %w", node, err)
	}
	return reply.Data, v, true, nil
}

// invalidate removes key from node when the node holds a version at most
// belowOrAt (0: any version).
func (c nodeClient) invalidate(ctx context.Context, node contracts.NodeID, key string, belowOrAt uint64) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := bus.Request[contracts.InvalidateReply](ctx, c.nc, contracts.NodeInvalidate(node),
		contracts.InvalidateRequest{Keys: []string{key}, BelowOrAt: belowOrAt})
	return err
}

// clearAll clears every node concurrently and sums their replies; Nodes
// counts the nodes that answered. The error names every node that did not.
func (c nodeClient) clearAll(ctx context.Context, nodes []contracts.NodeID) (contracts.ClearReply, error) {
	return bus.ClearNodes(ctx, c.nc, nodes, c.timeout)
}

// tableNodes lists every node the table mentions (active, owners and
// previous owners), sorted and without duplicates.
func tableNodes(t *contracts.PartitionTable) []contracts.NodeID {
	if t == nil {
		return nil
	}
	var ids []contracts.NodeID
	for _, list := range [][]contracts.NodeID{t.Nodes, t.Owners, t.Previous} {
		for _, id := range list {
			if id != "" {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}
