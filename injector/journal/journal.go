// Package journal keeps refreshed grants durable on local disk until the
// grant store holds them: the write-ahead half of the refresh protocol
// (docs/design.md, "Refresh"). When a provider rotates a refresh token, the
// old one is spent at that instant; if the new grant then exists only in
// memory, a crash or a store outage loses it and the grant with it. The
// token source therefore writes the new grant here, fsync'd, before it uses
// the new access token or tries the store, and removes the entry once the
// store holds that generation or a newer one. At start-up the sidecar reads
// the journal back and writes what it finds into the store before serving.
//
// Each entry is one file named after its grant and generation, written to a
// temporary file, fsync'd, renamed into place and made durable with an
// fsync of the directory, so a reader never sees half an entry. The grant
// (tokens included) is sealed with AES-256-GCM under the store's key, with
// the provider, user and generation as additional data, so an entry copied
// to another grant's name does not open. Provider, user and generation are
// also kept in clear in the file, to name it; they are not secrets.
//
// A Journal is safe for concurrent use by the goroutines of one process.
// Several processes must not share one directory: each sidecar replica
// needs its own (an emptyDir per pod in Kubernetes survives container
// restarts, which is what the journal is for). Open takes an exclusive lock
// on the directory and refuses one that another process holds.
package journal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/flock"
	"github.com/onbehalf-dev/onbehalf/internal/keyfile"
)

// KeySize is the size of the journal's key: one raw AES-256 key, the same
// format as the embedded store's key file.
const KeySize = 32

// entryFormat is the layout number stored in every entry file.
const entryFormat = 1

// File names.
const (
	entrySuffix = ".entry"
	tmpPrefix   = ".tmp-"
	lockName    = ".lock"
)

// maxEntrySize bounds an entry file read back: a grant is a few KiB at most;
// the bound stops a stray large file from being read into memory.
const maxEntrySize = 1 << 20

// Entry is one refreshed grant waiting to be written to the store.
type Entry struct {
	// Grant is the refreshed grant (its Generation is the new one), tokens
	// included.
	Grant *store.Grant
	// Base is the store version of the grant the refresh started from: the
	// compare-and-swap version of the write.
	Base store.Version
	// Spent is the refresh token the provider consumed to issue Grant's.
	Spent string
	// LeaseID and LeaseHolder identify the refresh lease held when the entry
	// was written, so a restarted sidecar can recognise it as its own.
	LeaseID, LeaseHolder string
	// Written is when the entry was written.
	Written time.Time
}

// String describes e without secrets.
func (e *Entry) String() string {
	return fmt.Sprintf("journal entry %s/%s generation %d", e.Grant.Provider, e.Grant.User, e.Grant.Generation)
}

// file is the JSON form of an entry file.
type file struct {
	Format     int    `json:"format"`
	Provider   string `json:"provider"`
	User       string `json:"user"`
	Generation int64  `json:"generation"`
	// Sealed is nonce || AES-GCM ciphertext of the JSON sealed struct.
	Sealed []byte `json:"sealed"`
}

// sealed is what an entry file seals.
type sealed struct {
	Grant       *store.Grant  `json:"grant"`
	Base        store.Version `json:"base"`
	Spent       string        `json:"spent"`
	LeaseID     string        `json:"lease_id,omitempty"`
	LeaseHolder string        `json:"lease_holder,omitempty"`
	Written     time.Time     `json:"written"`
}

// Journal is a directory of entries.
type Journal struct {
	dir  string
	aead cipher.AEAD
	lock *os.File // holds the directory's lock until Close
}

// Errors of Load.
var (
	// ErrCorrupt means an entry file could not be read back: not an entry,
	// tampered with, or sealed under another key. The file is left in place
	// for an operator.
	ErrCorrupt = errors.New("journal entry unreadable")
	// ErrInUse means another process (or another Journal of this one) has
	// the directory open.
	ErrInUse = errors.New("journal directory in use by another process")
)

// Open opens the journal in dir, creating dir (mode 0700) when missing,
// with the key in keyFile, created from crypto/rand (mode 0600) when
// missing. The embedded store's key file may be given: entries are sealed
// with their own additional data.
func Open(dir, keyFile string) (*Journal, error) {
	if dir == "" || keyFile == "" {
		return nil, errors.New("open journal: directory and key file are required")
	}
	key, err := keyfile.LoadOrCreate(keyFile, KeySize, false)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	j, err := newJournal(dir, key)
	clear(key)
	if err != nil {
		return nil, err
	}
	return j, nil
}

func newJournal(dir string, key []byte) (*Journal, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("open journal: %s is not a directory", dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("open journal: directory %s is accessible to group or others (mode %o); want 0700", dir, st.Mode().Perm())
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := flock.TryLock(lock); err != nil {
		if errors.Is(err, flock.ErrLocked) {
			err = ErrInUse
		}
		lock.Close()
		return nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	return &Journal{dir: dir, aead: aead, lock: lock}, nil
}

// Close releases the directory's lock. The Journal must not be used after.
func (j *Journal) Close() error {
	return j.lock.Close()
}

// Dir returns the journal's directory.
func (j *Journal) Dir() string { return j.dir }

// grantPrefix is the file-name prefix of a grant's entries: a hash of the
// names, so that any user name makes a safe file name.
func grantPrefix(provider, user string) string {
	sum := sha256.Sum256([]byte(provider + "\x00" + user))
	return hex.EncodeToString(sum[:12]) + "-"
}

// entryName is the file name of a grant's entry of generation gen.
func entryName(provider, user string, gen int64) string {
	return grantPrefix(provider, user) + strconv.FormatInt(gen, 10) + entrySuffix
}

// additionalData binds a sealed entry to its grant and generation.
func additionalData(provider, user string, gen int64) []byte {
	return []byte("onbehalf/journal/v1\x00" + provider + "\x00" + user + "\x00" + strconv.FormatInt(gen, 10))
}

// Write makes e durable: when Write returns nil, the entry survives a crash
// of the process or the machine. An entry of the same grant and generation
// is replaced.
func (j *Journal) Write(e *Entry) error {
	g := e.Grant
	if g == nil {
		return errors.New("write journal entry: nil grant")
	}
	if err := store.ValidateGrant(g); err != nil {
		return fmt.Errorf("write journal entry: %w", err)
	}
	plain, err := json.Marshal(sealed{Grant: g, Base: e.Base, Spent: e.Spent, LeaseID: e.LeaseID, LeaseHolder: e.LeaseHolder, Written: e.Written})
	if err != nil {
		return fmt.Errorf("write %s: %w", e, err)
	}
	nonce := make([]byte, j.aead.NonceSize(), j.aead.NonceSize()+len(plain)+j.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		clear(plain)
		return fmt.Errorf("write %s: nonce: %w", e, err)
	}
	ct := j.aead.Seal(nonce, nonce, plain, additionalData(g.Provider, g.User, g.Generation))
	clear(plain)
	data, err := json.Marshal(file{Format: entryFormat, Provider: g.Provider, User: g.User, Generation: g.Generation, Sealed: ct})
	if err != nil {
		return fmt.Errorf("write %s: %w", e, err)
	}
	if err := j.install(entryName(g.Provider, g.User, g.Generation), data); err != nil {
		return fmt.Errorf("write %s: %w", e, err)
	}
	return nil
}

// install writes data to name atomically and durably: a synced temporary
// file renamed into place, then the directory synced.
func (j *Journal) install(name string, data []byte) error {
	tmp, err := os.CreateTemp(j.dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Chmod(0o600), tmp.Sync(), tmp.Close()); err != nil {
		_ = os.Remove(tmpName)
		return err
	}
	if err := os.Rename(tmpName, filepath.Join(j.dir, name)); err != nil {
		_ = os.Remove(tmpName)
		return err
	}
	return syncDir(j.dir)
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Remove deletes the entries of provider/user up to generation upTo
// (inclusive): the store holds upTo or a newer generation, or the grant is
// gone. Missing entries are not an error. Removal is not fsync'd: an entry
// that reappears after a crash is removed again at the next Load and
// replay, since the store holds its generation.
func (j *Journal) Remove(provider, user string, upTo int64) error {
	names, err := j.names()
	if err != nil {
		return fmt.Errorf("remove journal entries %s/%s: %w", provider, user, err)
	}
	prefix := grantPrefix(provider, user)
	var errs []error
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		gen, err := strconv.ParseInt(strings.TrimSuffix(rest, entrySuffix), 10, 64)
		if err != nil || gen > upTo {
			continue
		}
		if err := os.Remove(filepath.Join(j.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove journal entries %s/%s: %w", provider, user, err)
	}
	return nil
}

// names returns the entry file names in the directory, sorted.
func (j *Journal) names() ([]string, error) {
	des, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range des {
		if de.Type().IsRegular() && strings.HasSuffix(de.Name(), entrySuffix) && !strings.HasPrefix(de.Name(), tmpPrefix) && !strings.HasPrefix(de.Name(), ".") {
			out = append(out, de.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// Load reads every entry back, oldest generation of each grant first. Files
// that cannot be read as entries are left in place and reported in the
// error, wrapping ErrCorrupt, next to the entries that could be read.
// Temporary files of writes that did not finish are removed.
func (j *Journal) Load() ([]*Entry, error) {
	des, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("load journal: %w", err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), tmpPrefix) {
			_ = os.Remove(filepath.Join(j.dir, de.Name()))
		}
	}
	names, err := j.names()
	if err != nil {
		return nil, fmt.Errorf("load journal: %w", err)
	}
	var out []*Entry
	var errs []error
	for _, name := range names {
		e, err := j.read(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w: %w", name, ErrCorrupt, err))
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *Entry) int {
		if c := strings.Compare(a.Grant.Provider, b.Grant.Provider); c != 0 {
			return c
		}
		if c := strings.Compare(a.Grant.User, b.Grant.User); c != 0 {
			return c
		}
		return int(a.Grant.Generation - b.Grant.Generation)
	})
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("load journal: %w", err)
	}
	return out, nil
}

// read opens one entry file. Errors never quote its content.
func (j *Journal) read(name string) (*Entry, error) {
	f, err := os.Open(filepath.Join(j.dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxEntrySize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxEntrySize {
		return nil, errors.New("larger than an entry can be")
	}
	var fl file
	if err := json.Unmarshal(data, &fl); err != nil {
		return nil, errors.New("not an entry")
	}
	if fl.Format != entryFormat {
		return nil, fmt.Errorf("unsupported format %d", fl.Format)
	}
	if name != entryName(fl.Provider, fl.User, fl.Generation) {
		return nil, errors.New("file name does not match its grant")
	}
	ns := j.aead.NonceSize()
	if len(fl.Sealed) < ns+j.aead.Overhead() {
		return nil, errors.New("sealed value truncated")
	}
	plain, err := j.aead.Open(nil, fl.Sealed[:ns], fl.Sealed[ns:], additionalData(fl.Provider, fl.User, fl.Generation))
	if err != nil {
		return nil, errors.New("wrong key or tampered entry")
	}
	defer clear(plain)
	var s sealed
	if err := json.Unmarshal(plain, &s); err != nil || s.Grant == nil {
		return nil, errors.New("sealed entry is not a grant")
	}
	if s.Grant.Provider != fl.Provider || s.Grant.User != fl.User || s.Grant.Generation != fl.Generation {
		return nil, errors.New("sealed grant does not match its file")
	}
	if err := store.ValidateGrant(s.Grant); err != nil {
		return nil, err
	}
	return &Entry{Grant: s.Grant, Base: s.Base, Spent: s.Spent, LeaseID: s.LeaseID, LeaseHolder: s.LeaseHolder, Written: s.Written}, nil
}
