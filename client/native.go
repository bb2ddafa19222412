package client

import (
	"fmt"
	"net"
	"net/url"

	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/nativeapi"
)

// Protocols a Client can speak to members (Config.Protocol).
const (
	// ProtocolNative is caucus's binary protocol on the client port (internal/nativeapi): one
	// multiplexed TCP connection per member with batched writes, several times cheaper in CPU
	// per request than HTTP/2. It carries every call to http:// endpoints, snapshot streams
	// included; https:// endpoints (the native protocol has no TLS) use connect.
	ProtocolNative = "native"
	// ProtocolConnect sends everything with connect-go over HTTP (h2c or TLS), as gRPC would:
	// for members behind HTTP proxies or load balancers.
	ProtocolConnect = "connect"
)

// checkProtocol validates Config.Protocol, returning the effective one.
func checkProtocol(p string) (string, error) {
	switch p {
	case "", ProtocolNative:
		return ProtocolNative, nil
	case ProtocolConnect:
		return ProtocolConnect, nil
	}
	return "", fmt.Errorf("client: protocol %q is not %q or %q", p, ProtocolNative, ProtocolConnect)
}

// nativeAddr returns the host:port the native protocol dials for endpoint URL u (as
// normalizeEndpoint returns it), or false when u cannot use it: https (no TLS on the native
// protocol) or a path prefix (a member behind an HTTP reverse proxy).
func nativeAddr(u string) (string, bool) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "http" || (pu.Path != "" && pu.Path != "/") {
		return "", false
	}
	if pu.Port() == "" {
		return net.JoinHostPort(pu.Hostname(), "80"), true
	}
	return pu.Host, true
}

// newEndpoint builds the service clients of endpoint URL u: native ones when the protocol and
// the URL allow it, connect ones otherwise.
func (c *Client) newEndpoint(u, protocol string) *endpoint {
	ep := &endpoint{url: u}
	maint := caucusv1connect.NewMaintenanceClient(c.httpc, u)
	if addr, ok := nativeAddr(u); ok && protocol == ProtocolNative {
		// The largest stream window: one watch item (a value and its previous version, 3 MiB
		// at the default limits) must fit in it.
		ep.native = nativeapi.NewClient(nativeapi.ClientConfig{Addr: addr, DialTimeout: c.cfg.DialTimeout,
			StreamWindow: nativeapi.MaxStreamWindow, Logger: c.log})
		ep.kv = nativeapi.KVClient{C: ep.native}
		ep.lease = nativeapi.LeaseClient{C: ep.native}
		ep.cluster = nativeapi.ClusterClient{C: ep.native}
		ep.maint = nativeapi.MaintenanceClient{C: ep.native}
		ep.events = nativeapi.EventsClient{C: ep.native}
		ep.consumer = nativeapi.ConsumersClient{C: ep.native}
		ep.connectMaint = maint
		return ep
	}
	ep.kv = caucusv1connect.NewKVClient(c.httpc, u)
	ep.lease = caucusv1connect.NewLeaseClient(c.httpc, u)
	ep.cluster = caucusv1connect.NewClusterClient(c.httpc, u)
	ep.maint = maint
	ep.events = caucusv1connect.NewEventsClient(c.httpc, u)
	ep.consumer = caucusv1connect.NewConsumersClient(c.httpc, u)
	return ep
}
