package server

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// BMC passwords are kept sealed (docs/reference.md, "Power control"):
// the state database, its backups and a copy of it hold each password
// as AES-256-GCM ciphertext under a key in its own file,
// $BTY_STATE_DIR/secret.key (0600), so a database file alone reveals
// none. bty-web opens a password only to log in to the BMC, or for an
// export asked to carry secrets.

// sealedPrefix marks a sealed value; a stored password without it is
// from before sealing (sealed when bty-web next starts).
const sealedPrefix = "sealed:v1:"

// secretKeyFile is the key's file name in the state directory.
const secretKeyFile = "secret.key"

// secretBox seals and opens BMC passwords with the state directory's
// key, loaded (or made, the first time) on first use.
type secretBox struct {
	path string
	once sync.Once
	aead cipher.AEAD
	err  error
}

func newSecretBox(stateDir string) *secretBox {
	return &secretBox{path: filepath.Join(stateDir, secretKeyFile)}
}

func (b *secretBox) load() (cipher.AEAD, error) {
	b.once.Do(func() {
		key, err := readOrMakeKey(b.path)
		if err != nil {
			b.err = err
			return
		}
		block, err := aes.NewCipher(key)
		if err == nil {
			b.aead, err = cipher.NewGCM(block)
		}
		b.err = err
	})
	return b.aead, b.err
}

// readOrMakeKey reads the 32-byte key (64 hex digits) at path, or makes
// one there (0600, created exclusively) when there is none.
func readOrMakeKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return readOrMakeKey(path) // made meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("making the key that seals BMC passwords, %s: %w (check BTY_STATE_DIR is writable)", path, err)
		}
		_, err = f.WriteString(hex.EncodeToString(key) + "\n")
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("writing the key that seals BMC passwords, %s: %w", path, err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the key that seals BMC passwords, %s: %w", path, err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("the key that seals BMC passwords, %s, is not 64 hex digits: restore it from where you keep the state directory's backups, or move it away (a new key is made; every BMC password must then be set again)", path)
	}
	return key, nil
}

// sealed reports whether v is a sealed value.
func sealed(v string) bool { return strings.HasPrefix(v, sealedPrefix) }

// seal is pw sealed ("" stays "", a sealed value stays as it is).
func (b *secretBox) seal(pw string) (string, error) {
	if pw == "" || sealed(pw) {
		return pw, nil
	}
	aead, err := b.load()
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return sealedPrefix + base64.RawStdEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(pw), nil)), nil
}

// errSealedElsewhere: a sealed password the key cannot open.
var errSealedElsewhere = errors.New("the stored BMC password was sealed with another key than " + secretKeyFile + " in BTY_STATE_DIR: set the password again (bty-ctl machines set MAC --power-password-stdin)")

// open is v opened (a value that is not sealed is returned as it is).
func (b *secretBox) open(v string) (string, error) {
	if !sealed(v) {
		return v, nil
	}
	aead, err := b.load()
	if err != nil {
		return "", err
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(v, sealedPrefix))
	if err != nil || len(raw) < aead.NonceSize() {
		return "", errSealedElsewhere
	}
	pw, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], nil)
	if err != nil {
		return "", errSealedElsewhere
	}
	return string(pw), nil
}
