package client

import (
	"context"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Cluster settings types.
type (
	ClusterSettings        = caucusv1.ClusterSettings
	SettingsResponse       = caucusv1.SettingsResponse
	UpdateSettingsResponse = caucusv1.UpdateSettingsResponse
)

// ClusterSettings returns the replicated cluster settings: the limits every member applies
// identically. They are read linearizably unless WithSerializable is given.
func (c *Client) ClusterSettings(ctx context.Context, opts ...OpOption) (*SettingsResponse, error) {
	var op Op
	for _, o := range opts {
		o(&op)
	}
	req := &caucusv1.SettingsRequest{Linearizable: !op.serial}
	return unary(ctx, c, "cluster settings", anyEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[SettingsResponse], error) {
		return ep.cluster.Settings(ctx, connect.NewRequest(req))
	})
}

// UpdateClusterSettings changes the settings set holds (non-zero fields) through the log and
// returns the settings in force afterwards. Settings that cannot work together are refused with
// InvalidArgument, and nothing changes. An update is retried only when it certainly was not
// applied.
func (c *Client) UpdateClusterSettings(ctx context.Context, set *ClusterSettings) (*UpdateSettingsResponse, error) {
	req := &caucusv1.UpdateSettingsRequest{Set: set}
	return unary(ctx, c, "cluster settings set", leaderEndpoint, retryNotApplied, func(ctx context.Context, ep *endpoint) (*connect.Response[UpdateSettingsResponse], error) {
		return ep.cluster.UpdateSettings(ctx, connect.NewRequest(req))
	})
}
