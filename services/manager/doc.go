// Package manager is cachepool's control plane: it owns pool membership,
// the partition table, the cache config, the pool mode and automatic
// parameters, and the ordered resize queue.
//
// Run serves the cachepool-manager micro service and applies resize
// commands from the CACHEPOOL_RESIZE stream one at a time, exactly once
// across restarts: the stream sequence of the last applied command is
// stored, with a compare-and-set, in the same KV entry as the target size,
// and a command's decision is stored before any action so that an
// interrupted resize resumes instead of being decided again.
//
// Several managers may run side by side: only the holder of the manager
// lease (bus.RunLeased, key LeaseRole in bus.LeaseBucket) is active; the
// others stand by and take over within the lease TTL when it dies.
//
// Partition moves are minimal and balanced (Rebalance, pure and
// table-tested). Moving partitions migrate warm: the table first names
// their previous owner (readers ask it on a miss), every previous owner hands
// its entries to the new owner, then the table drops Previous. Failed nodes
// (silent for 3 heartbeats) leave the table at once and are replaced.
//
// Nodes are launched through a Launcher (local or exec provisioners) or are
// standby nodes that registered themselves and are activated and
// deactivated. A node always gets the current cache config before it takes
// partitions.
package manager
