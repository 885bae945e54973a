// Package assign assigns workstations to Tor instances: a keyed hash of a
// workstation's identity modulo the number of instances, under a key kept
// in the state directory. It is the one home of the assignment, for the
// router and for tgbench, which places its workstations on instances.
package assign

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
)

// With several Tor instances each workstation is assigned to one, and
// stays there. The assignment is static (an instance that dies does not
// hand its workstations to another: they fail closed until it is back)
// so that a workstation's circuits, guards and names never move between
// instances, and so that one instance's failure cannot merge its
// workstations' traffic into another Tor's circuits and guards.
//
// It is a keyed hash of the workstation's identity (the key isolation
// uses: on a LAN its machine, on a TUN its address) modulo the number of
// instances: a workstation cannot choose its instance (to share a Tor
// with another one) without the key, and the spread over instances is
// even. The key is kept in the state directory so that a workstation keeps its
// instance, and so its Tor's guards, across restarts: a workstation that
// moved at every restart would meet N guard sets instead of one.

// KeyFile is the key's file in the state directory.
const KeyFile = "tor-instances.key"

// KeyLen is the key's length in bytes (an HMAC-SHA256 key).
const KeyLen = 32

// Key returns the key of the assignment: StateDir's (created on
// first use), else the isolation secret, else a random key for this run.
func Key(stateDir string, secret []byte) ([]byte, error) {
	if stateDir == "" {
		if secret != nil {
			return secret, nil
		}
		key := make([]byte, KeyLen)
		_, err := rand.Read(key)
		return key, err
	}
	path := filepath.Join(stateDir, KeyFile)
	key, err := os.ReadFile(path)
	switch {
	case err == nil && len(key) == KeyLen:
		return key, nil
	case err == nil:
		return nil, fmt.Errorf("tor instances key %s: %d bytes, want %d (delete it to draw a new one: workstations may then change instances)", path, len(key), KeyLen)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("tor instances key: %w", err)
	}
	key = make([]byte, KeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("tor instances key: %w", err)
	}
	// Write then rename: a crash leaves the old state (no key), never a
	// short key.
	tmp, err := os.CreateTemp(stateDir, KeyFile+".*")
	if err != nil {
		return nil, fmt.Errorf("tor instances key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("tor instances key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("tor instances key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("tor instances key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("tor instances key: %w", err)
	}
	return key, nil
}

// Picker assigns workstations to n instances. It is safe for concurrent
// use.
type Picker struct {
	n    uint64
	pool sync.Pool // of hash.Hash: HMAC-SHA256 under the key
}

// New returns the Picker of n instances under key.
func New(key []byte, n int) *Picker {
	p := &Picker{n: uint64(n)}
	p.pool.New = func() any { return hmac.New(sha256.New, key) }
	return p
}

// Pick is who's instance, 0 to n-1. An IPv4 address and its IPv4-mapped
// form are one workstation.
func (p *Picker) Pick(who netip.Addr) int {
	h := p.pool.Get().(hash.Hash)
	defer p.pool.Put(h)
	h.Reset()
	b := who.Unmap().As16()
	h.Write(b[:])
	var sum [sha256.Size]byte
	return int(binary.BigEndian.Uint64(h.Sum(sum[:0])[:8]) % p.n)
}
