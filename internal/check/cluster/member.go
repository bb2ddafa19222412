package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
)

// ReplaceMember removes the member name from the cluster through the Cluster API, stops its
// process, and adds it back as a brand-new member (same name and addresses, empty data
// directory, --initial-cluster-state existing), as an operator replacing a failed machine
// would. The removed member's data directory is kept aside (renamed) for post-mortems. The
// membership requests go to the other members: a member does not serve its own removal.
func (c *Cluster) ReplaceMember(ctx context.Context, name string) error {
	n := c.Node(name)
	if n == nil {
		return fmt.Errorf("cluster: no member %q", name)
	}
	var others []string
	for _, m := range c.Nodes {
		if m != n {
			others = append(others, m.ClientURL)
		}
	}
	var id uint64
	err := c.onAny(ctx, others, func(ctx context.Context, cl caucusv1connect.ClusterClient) error {
		resp, err := cl.MemberList(ctx, connect.NewRequest(&caucusv1.MemberListRequest{Linearizable: true}))
		if err != nil {
			return err
		}
		for _, m := range resp.Msg.Members {
			if m.Name == name {
				id = m.Id
				return nil
			}
		}
		return fmt.Errorf("member %q not in the member list", name)
	})
	if err != nil {
		return fmt.Errorf("cluster: replace %s: list: %w", name, err)
	}
	if err := c.onAny(ctx, others, func(ctx context.Context, cl caucusv1connect.ClusterClient) error {
		_, err := cl.MemberRemove(ctx, connect.NewRequest(&caucusv1.MemberRemoveRequest{Id: id}))
		return err
	}); err != nil {
		return fmt.Errorf("cluster: replace %s: remove %x: %w", name, id, err)
	}
	if err := n.Kill(); err != nil {
		return err
	}
	if err := os.Rename(n.DataDir, fmt.Sprintf("%s.removed-%d", n.DataDir, time.Now().UnixNano())); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("cluster: replace %s: %w", name, err)
	}
	if err := c.onAny(ctx, others, func(ctx context.Context, cl caucusv1connect.ClusterClient) error {
		_, err := cl.MemberAdd(ctx, connect.NewRequest(&caucusv1.MemberAddRequest{PeerUrls: []string{n.PeerURL}, Name: name}))
		return err
	}); err != nil {
		return fmt.Errorf("cluster: replace %s: add: %w", name, err)
	}
	var initial []string
	for _, m := range c.Nodes {
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	return n.startWith(strings.Join(initial, ","), "existing")
}

// onAny runs f against each endpoint in turn until one succeeds or ctx ends; membership changes
// must reach the leader's quorum, and any live member forwards them.
func (c *Cluster) onAny(ctx context.Context, endpoints []string, f func(context.Context, caucusv1connect.ClusterClient) error) error {
	var last error
	for attempt := 0; ; attempt++ {
		ep := endpoints[attempt%len(endpoints)]
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		last = f(actx, caucusv1connect.NewClusterClient(c.httpc, ep))
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
