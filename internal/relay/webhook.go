package relay

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Webhook headers.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderEventID        = "Caucus-Event-Id"
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>":
	// the receiver recomputes it, and refuses a timestamp too old to stop replays.
	HeaderSignature = "Caucus-Signature"
)

// WebhookConfig configures a webhook sink.
type WebhookConfig struct {
	URL string
	// Secret signs every body (HeaderSignature). Required: an unsigned webhook can be forged.
	Secret []byte
	// Timeout bounds one POST (default 10 s).
	Timeout time.Duration
	// Client is the HTTP client (default: a new one).
	Client *http.Client
	// Now is the clock of the signature's timestamp (default time.Now).
	Now func() time.Time
}

// WebhookSink POSTs each event's payload to a URL.
type WebhookSink struct {
	cfg WebhookConfig
}

// NewWebhookSink checks cfg and returns a sink.
func NewWebhookSink(cfg WebhookConfig) (*WebhookSink, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("relay: webhook: no URL")
	}
	if len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("relay: webhook %s: no signing secret", cfg.URL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &WebhookSink{cfg: cfg}, nil
}

// Sign returns the HeaderSignature value of body at time t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Send POSTs ev's payload with its id as Idempotency-Key, its metadata and headers as HTTP
// headers, and a signature. A 2xx answer delivers it; 408, 429 and 5xx are retried; any other
// status is permanent.
func (s *WebhookSink) Send(ctx context.Context, ev *caucusv1.Event) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	body := ev.GetPayload()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return &PermanentError{fmt.Errorf("relay: webhook request: %w", err)}
	}
	for k, v := range ev.GetHeaders() {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	setMetadata(req.Header.Set, ev)
	req.Header.Set(HeaderIdempotencyKey, ev.GetId())
	req.Header.Set(HeaderEventID, ev.GetId())
	req.Header.Set(HeaderSignature, Sign(s.cfg.Secret, s.cfg.Now(), body))
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("relay: webhook POST event %s: %w", ev.GetId(), err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return fmt.Errorf("relay: webhook POST event %s: %s: %q", ev.GetId(), resp.Status, snippet)
	}
	return &PermanentError{fmt.Errorf("relay: webhook POST event %s: %s: %q", ev.GetId(), resp.Status, snippet)}
}

// Close releases nothing: the HTTP client's idle connections close on their own.
func (s *WebhookSink) Close() error { return nil }
