package manager

import (
	"fmt"

	"github.com/cachepool/cachepool/contracts"
)

// decision is what applying one resize command to the pool decides.
type decision struct {
	From, To int
	Reject   string // non-empty: the command is rejected with this reason
}

// decide applies cmd to a pool whose target size is current, within
// 1..maxNodes. A change of ±1 moves from the current target; a target is
// absolute. Bounds are checked here, when the command runs, never when it is
// queued. available is how many more nodes can be brought in (-1: no limit,
// i.e. launched on demand); a standby pool cannot grow past its idle nodes.
// It is pure.
func decide(cmd contracts.ResizeCommand, current, maxNodes, available int) decision {
	d := decision{From: current, To: current}
	switch {
	case cmd.Change > 0:
		d.To = current + 1
		if d.To > maxNodes {
			d.To = current
			d.Reject = fmt.Sprintf("the pool is at its maximum of %d nodes", maxNodes)
			return d
		}
	case cmd.Change < 0:
		d.To = current - 1
		if d.To < 1 {
			d.To = current
			d.Reject = "the pool is at its minimum of 1 node"
			return d
		}
	default:
		if cmd.Target < 1 || cmd.Target > maxNodes {
			d.Reject = fmt.Sprintf("target %d is outside 1..%d", cmd.Target, maxNodes)
			return d
		}
		d.To = cmd.Target
	}
	if grow := d.To - current; available >= 0 && grow > available {
		d.Reject = fmt.Sprintf("growing to %d needs %d more standby nodes, %d available", d.To, grow, available)
		d.To = current
	}
	return d
}
