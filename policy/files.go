package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"go.uber.org/zap"
)

// reloadDebounce is how long the watcher waits after the last file event
// before reloading. Editors write a temporary file and rename it, and a
// Kubernetes ConfigMap update swaps a symlink after writing a new directory;
// reloading once after the burst avoids compiling a half-written set.
const reloadDebounce = 100 * time.Millisecond

// revisionLen is how many hex digits of the content hash make a revision:
// 64 bits identify a policy version among a deployment's handful without
// making audit records longer than they need to be.
const revisionLen = 16

// skipHidden keeps hidden files and directories out of a directory load:
// editor swap files, and the ..data and ..<timestamp> entries of a mounted
// ConfigMap (which would otherwise load every policy twice).
func skipHidden(_ string, info fs.FileInfo, depth int) bool {
	if depth == 0 {
		return false
	}
	name := info.Name()
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~")
}

// loadFiles reads the policy set under paths: .rego modules, and .json,
// .yaml and .yml data documents.
func loadFiles(paths []string) (*snapshot, error) {
	res, err := loader.NewFileLoader().
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		WithCapabilities(capabilities()).
		Filtered(paths, skipHidden)
	if err != nil {
		return nil, fmt.Errorf("load policy files: %w", err)
	}
	modules := make(map[string]*ast.Module, len(res.Modules))
	raw := make(map[string][]byte, len(res.Modules))
	for _, m := range res.Modules {
		modules[m.Name] = m.Parsed
		raw[m.Name] = m.Raw
	}
	digest, err := contentDigest(raw, res.Documents)
	if err != nil {
		return nil, err
	}
	return &snapshot{modules: modules, data: res.Documents, revision: digest[:revisionLen], digest: digest}, nil
}

// contentDigest hashes modules (by name, in name order) and the data
// document.
func contentDigest(raw map[string][]byte, data map[string]any) (string, error) {
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "module %q %d\n", n, len(raw[n]))
		h.Write(raw[n])
	}
	// encoding/json sorts map keys, so equal data hashes equally.
	bs, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("hash policy data: %w", err)
	}
	fmt.Fprintf(h, "data %d\n", len(bs))
	h.Write(bs)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// reloadFiles loads the configured paths and activates the result.
func (e *Engine) reloadFiles(ctx context.Context) error {
	s, err := loadFiles(e.cfg.Paths)
	if err != nil {
		e.loadMu.Lock()
		e.refuse("", err)
		e.loadMu.Unlock()
		return err
	}
	return e.activate(ctx, s)
}

// startFiles loads the files once and, when configured, watches them.
func (e *Engine) startFiles(initCtx, runCtx context.Context) error {
	_ = e.reloadFiles(initCtx) // a failure is recorded in Status; the watcher may fix it
	if !e.cfg.Watch {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy files: %w", err)
	}
	e.closers = append(e.closers, func() { _ = w.Close() })

	var roots []string // directories whose whole tree is watched
	for _, p := range e.cfg.Paths {
		info, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("watch policy path %s: %w", p, err)
		}
		if !info.IsDir() {
			// Watch the directory, not the file: editors and ConfigMap
			// updates replace files, which ends a watch on the old inode.
			if err := w.Add(filepath.Dir(p)); err != nil {
				return fmt.Errorf("watch policy path %s: %w", p, err)
			}
			continue
		}
		roots = append(roots, filepath.Clean(p))
		if err := addTree(w, p); err != nil {
			return fmt.Errorf("watch policy path %s: %w", p, err)
		}
	}
	e.wg.Add(1)
	go e.watch(runCtx, w, roots)
	return nil
}

// addTree watches dir and its non-hidden subdirectories.
func addTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		return w.Add(path)
	})
}

// watch reloads after each burst of file events until ctx ends. Every event
// in a watched directory counts, hidden names included (a ConfigMap update
// shows up only as a rename of its hidden ..data link); a reload that finds
// the same content is a no-op.
func (e *Engine) watch(ctx context.Context, w *fsnotify.Watcher, roots []string) {
	defer e.wg.Done()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if ev.Has(fsnotify.Create) && inTree(roots, ev.Name) && !strings.HasPrefix(filepath.Base(ev.Name), ".") {
				if info, err := os.Stat(ev.Name); err == nil && info.IsDir() {
					if err := addTree(w, ev.Name); err != nil {
						e.log.Warn("cannot watch new policy directory", zap.String("dir", ev.Name), zap.Error(err))
					}
				}
			}
			debounce.Reset(reloadDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			e.log.Warn("policy file watch error", zap.Error(err))
		case <-debounce.C:
			_ = e.reloadFiles(ctx)
		}
	}
}

// inTree reports whether path lies under one of roots.
func inTree(roots []string, path string) bool {
	for _, r := range roots {
		if strings.HasPrefix(path, r+string(filepath.Separator)) {
			return true
		}
	}
	return false
}
