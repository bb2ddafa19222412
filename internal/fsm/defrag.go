package fsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/node"
)

// Defragment rewrites this member's state machine file into a compact copy
// (mvcc.Store.Defragment) and returns the file size before and after. It runs on the node's
// loop, alone (node.Exclusive): the store requires that no batch be open, and the member
// processes nothing else meanwhile, so operators defragment one member at a time.
//
// A failure after the file was swapped (the store cannot be reopened) stops the member; a
// failure before leaves it running on its current file.
func Defragment(ctx context.Context, n *node.Node, store *mvcc.Store) (before, after int64, err error) {
	// The sizes travel over a channel: if ctx expires first, the loop may still be writing them.
	sizes := make(chan [2]int64, 1)
	err = n.Exclusive(ctx, func() error {
		b, a, err := store.Defragment()
		if errors.Is(err, mvcc.ErrClosed) {
			// A restart opens the file, which is complete whether or not the rename happened.
			return fmt.Errorf("fsm: defragment: state machine unusable: %w: %w", node.ErrFatal, err)
		}
		if err != nil {
			return fmt.Errorf("fsm: defragment: %w", err)
		}
		sizes <- [2]int64{b, a}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	s := <-sizes
	return s[0], s[1], nil
}
