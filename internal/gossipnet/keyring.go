package gossipnet

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

const (
	nonceBytes = 12
	tagBytes   = 16
	// Overhead is what sealing adds to a message: the nonce in front, the GCM tag behind.
	Overhead = nonceBytes + tagBytes
)

// ErrNoKey is wrapped by Open when no key of the ring authenticates a message: it was sealed with
// a key this member does not hold, or it is not sealed at all, or it was tampered with.
var ErrNoKey = errors.New("gossipnet: no key of the keyring opens the message")

// Keyring holds the AES-GCM keys of a member: the first (primary) seals, every one opens. It is
// safe for concurrent use; Set replaces the keys atomically, so a rotation never stops traffic.
type Keyring struct {
	mu    sync.RWMutex
	aeads []cipher.AEAD // aeads[0] is the primary
	raw   [][]byte
}

// NewKeyring returns a keyring of the given keys (16, 24 or 32 bytes each: AES-128/192/256), the
// first being the primary.
func NewKeyring(keys ...[]byte) (*Keyring, error) {
	k := &Keyring{}
	if err := k.Set(keys...); err != nil {
		return nil, err
	}
	return k, nil
}

// Set replaces the keys; the first becomes the primary. On error the ring is unchanged.
func (k *Keyring) Set(keys ...[]byte) error {
	if len(keys) == 0 {
		return errors.New("gossipnet: keyring: no keys")
	}
	aeads := make([]cipher.AEAD, 0, len(keys))
	raw := make([][]byte, 0, len(keys))
	for i, key := range keys {
		switch len(key) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("gossipnet: keyring: key %d is %d bytes, want 16, 24 or 32", i+1, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return fmt.Errorf("gossipnet: keyring: key %d: %w", i+1, err)
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return fmt.Errorf("gossipnet: keyring: key %d: %w", i+1, err)
		}
		aeads = append(aeads, gcm)
		raw = append(raw, bytes.Clone(key))
	}
	k.mu.Lock()
	k.aeads, k.raw = aeads, raw
	k.mu.Unlock()
	return nil
}

// Keys returns copies of the keys, the primary first.
func (k *Keyring) Keys() [][]byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([][]byte, len(k.raw))
	for i, r := range k.raw {
		out[i] = bytes.Clone(r)
	}
	return out
}

// Seal appends to dst the message sealed with the primary key: a random nonce, then the
// ciphertext and tag.
func (k *Keyring) Seal(dst, msg []byte) []byte {
	k.mu.RLock()
	gcm := k.aeads[0]
	k.mu.RUnlock()
	var nonce [nonceBytes]byte
	// crypto/rand.Read never fails (it panics if the OS source is broken).
	_, _ = rand.Read(nonce[:])
	dst = append(dst, nonce[:]...)
	return gcm.Seal(dst, nonce[:], msg, nil)
}

// Open returns the plaintext of a sealed message, trying every key of the ring.
func (k *Keyring) Open(sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes is shorter than nonce and tag", ErrNoKey, len(sealed))
	}
	k.mu.RLock()
	aeads := k.aeads
	k.mu.RUnlock()
	nonce, body := sealed[:nonceBytes], sealed[nonceBytes:]
	for _, gcm := range aeads {
		if out, err := gcm.Open(nil, nonce, body, nil); err == nil {
			return out, nil
		}
	}
	return nil, ErrNoKey
}

// ReadKeyringFile parses a keyring file: one base64 key per line, the first the primary; blank
// lines and lines starting with # are ignored.
func ReadKeyringFile(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossipnet: read keyring file: %w", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("gossipnet: keyring file %s line %d: not base64: %w", path, i+1, err)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossipnet: keyring file %s holds no key", path)
	}
	return keys, nil
}

// LoadKeyringFile reads a keyring file (see ReadKeyringFile) into a new Keyring.
func LoadKeyringFile(path string) (*Keyring, error) {
	keys, err := ReadKeyringFile(path)
	if err != nil {
		return nil, err
	}
	k, err := NewKeyring(keys...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
