package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// bty-web's SSH identity (docs/reference.md, "cijoe-online"): an
// ed25519 key pair made on first need in $BTY_STATE_DIR/keys
// (id_ed25519, 0600, and id_ed25519.pub), which cijoe-online runs log
// in with. The private key never leaves that directory: no route serves
// it and no export carries it; the public key is shown (GET /settings,
// the settings page) and seeded into cloud-init images.

// sshKeyComment ends the public key's authorized_keys line.
const sshKeyComment = "bty-web"

// sshIdentity loads (or makes, the first time) the key pair.
type sshIdentity struct {
	dir    string
	mu     sync.Mutex
	signer ssh.Signer
	pub    string
}

func newSSHIdentity(stateDir string) *sshIdentity {
	return &sshIdentity{dir: filepath.Join(stateDir, "keys")}
}

// keyPath is the private key's file, for cijoe's config.
func (k *sshIdentity) keyPath() string { return filepath.Join(k.dir, "id_ed25519") }

// load returns the signer and the public key's authorized_keys line.
func (k *sshIdentity) load() (ssh.Signer, string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.signer != nil {
		return k.signer, k.pub, nil
	}
	b, err := os.ReadFile(k.keyPath())
	if errors.Is(err, os.ErrNotExist) {
		if err := k.make(); err != nil {
			return nil, "", err
		}
		b, err = os.ReadFile(k.keyPath())
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading bty-web's SSH key: %w (check BTY_STATE_DIR/keys)", err)
	}
	if fi, err := os.Stat(k.keyPath()); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// ssh refuses a private key others can read: keep it usable.
		if err := os.Chmod(k.keyPath(), 0o600); err != nil {
			return nil, "", fmt.Errorf("bty-web's SSH key %s is readable by others and cannot be made 0600: %w", k.keyPath(), err)
		}
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, "", fmt.Errorf("bty-web's SSH key %s does not parse (%w): move it away and bty-web makes a new one (then authorise the new public key)", k.keyPath(), err)
	}
	k.signer = signer
	k.pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " " + sshKeyComment
	return k.signer, k.pub, nil
}

// make writes a new key pair, the private half created exclusively
// with mode 0600 in a 0700 directory.
func (k *sshIdentity) make() error {
	if err := os.MkdirAll(k.dir, 0o700); err != nil {
		return fmt.Errorf("making %s for bty-web's SSH key: %w (check BTY_STATE_DIR is writable)", k.dir, err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, sshKeyComment)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(k.keyPath(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil // made meanwhile
	}
	if err != nil {
		return fmt.Errorf("writing bty-web's SSH key: %w", err)
	}
	err = pem.Encode(f, block)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(k.keyPath())
		return fmt.Errorf("writing bty-web's SSH key: %w", err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + sshKeyComment + "\n"
	return os.WriteFile(k.keyPath()+".pub", []byte(line), 0o644)
}

// publicKey is the public key's authorized_keys line ("" when the key
// cannot be loaded or made; the error is the caller's to show).
func (k *sshIdentity) publicKey() (string, error) {
	_, pub, err := k.load()
	return pub, err
}

// keyBlob is the public key's base64 blob alone (no type, no comment):
// what the iPXE script passes to the live env as bty.ssh_key.
func (k *sshIdentity) keyBlob() (string, error) {
	pub, err := k.publicKey()
	if err != nil {
		return "", err
	}
	f := strings.Fields(pub)
	if len(f) < 2 {
		return "", errors.New("bty-web's SSH public key is malformed")
	}
	return f[1], nil
}
