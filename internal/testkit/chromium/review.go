package chromium

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// Widths at which the connect server's pages are checked: a desktop
// window, a current phone and the narrowest phone in common use.
const (
	DesktopWidth = 1280
	PhoneWidth   = 390
	NarrowWidth  = 360
)

// viewportHeight is the window height of every width; screenshots capture
// the whole page beyond it.
const viewportHeight = 900

// SetWidth sizes the window to width CSS pixels (as a phone, with touch
// and the page's viewport meta honoured, below 600) and reloads nothing:
// the next page loads at this width, and the current one reflows.
func (b *Browser) SetWidth(width int) error {
	opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(1)}
	if width < 600 {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)
	}
	if err := b.do(chromedp.EmulateViewport(int64(width), viewportHeight, opts...)); err != nil {
		return fmt.Errorf("set width %d: %w", width, err)
	}
	return nil
}

// Overflow returns how many CSS pixels the page is wider than the window
// (0 when nothing scrolls sideways), and the ids or tags of the widest
// elements that stick out.
func (b *Browser) Overflow() (int, []string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	type result struct {
		Over     int      `json:"over"`
		Culprits []string `json:"culprits"`
	}
	r, err := chromedp.Run(ctx, chromedp.Evaluate[result](`(() => {
  const w = document.documentElement.clientWidth;
  const over = Math.max(0, document.documentElement.scrollWidth - w);
  const culprits = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > w + 1 || r.left < -1)) {
      culprits.push(el.id ? '#' + el.id : el.tagName.toLowerCase() + (el.className ? '.' + String(el.className).split(' ')[0] : ''));
    }
  }
  return {over, culprits: culprits.slice(0, 8)};
})()`))
	if err != nil {
		return 0, nil, fmt.Errorf("measure overflow: %w", err)
	}
	return r.Over, r.Culprits, nil
}

// Visible reports whether the element with id lies wholly inside the
// page's width (a button pushed off the side of a phone is not).
func (b *Browser) Visible(id string) (bool, error) {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => {
  const el = document.getElementById(%q);
  if (!el) return false;
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= document.documentElement.clientWidth;
})()`, id)))
}

// Violation is one axe-core rule an element breaks.
type Violation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target []any  `json:"target"`
		HTML   string `json:"html"`
	} `json:"nodes"`
}

func (v Violation) String() string {
	var targets []string
	for _, n := range v.Nodes {
		targets = append(targets, fmt.Sprint(n.Target...))
	}
	return fmt.Sprintf("%s (%s): %s at %s", v.ID, v.Impact, v.Help, strings.Join(targets, ", "))
}

// Serious reports whether v is serious or critical.
func (v Violation) Serious() bool { return v.Impact == "serious" || v.Impact == "critical" }

// axeSource is axe.min.js, read once.
var axeSource = sync.OnceValues(func() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "testdata", "axe", "node_modules", "axe-core", "axe.min.js")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read axe-core (%w): install it with `make axe`", err)
	}
	return string(b), nil
})

// Axe runs axe-core (WCAG 2.x A and AA rules and best practices) on the
// current page and returns its violations. axe-core comes from npm
// (testdata/axe, installed by `make axe`); it is evaluated through the
// DevTools protocol, which the page's CSP does not govern, so the page
// runs exactly the scripts it allows.
func (b *Browser) Axe() ([]Violation, error) {
	src, err := axeSource()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](src)); err != nil {
		return nil, fmt.Errorf("load axe-core: %w", err)
	}
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](
		`axe.run(document, {resultTypes: ['violations']}).then(r => r.violations)`, chromedp.EvalAwaitPromise))
	if err != nil {
		return nil, fmt.Errorf("run axe-core: %w", err)
	}
	var vs []Violation
	if err := json.Unmarshal(raw, &vs); err != nil {
		return nil, fmt.Errorf("decode axe-core results: %w", err)
	}
	return vs, nil
}

// ScreenshotDir is where Screenshot writes: $ONBEHALF_SCREENSHOTS, or
// .cache/screenshots at the repository root (git ignores .cache).
func ScreenshotDir() string {
	if d := os.Getenv("ONBEHALF_SCREENSHOTS"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", ".cache", "screenshots")
}

// unsafeName matches what does not belong in a file name.
var unsafeName = regexp.MustCompile(`[^a-z0-9._-]+`)

// Screenshot saves the whole current page as ScreenshotDir()/name.png and
// returns the path.
func (b *Browser) Screenshot(name string) (string, error) {
	dir := ScreenshotDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("screenshot: %w", err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	path := filepath.Join(dir, unsafeName.ReplaceAllString(strings.ToLower(name), "-")+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", fmt.Errorf("screenshot: %w", err)
	}
	return path, nil
}

// Review checks the current page at the given widths: axe-core finds no
// serious or critical violation, nothing sticks out sideways, and a
// screenshot is saved as "<name>-<width>.png". Every problem fails t; the
// screenshots are written either way, for a person to look at.
func (b *Browser) Review(t testing.TB, name string, widths ...int) {
	t.Helper()
	for _, w := range widths {
		if err := b.SetWidth(w); err != nil {
			t.Fatal(err)
		}
		path, err := b.Screenshot(fmt.Sprintf("%s-%d", name, w))
		if err != nil {
			t.Errorf("%s at %d px: %v", name, w, err)
		} else {
			t.Logf("screenshot: %s", path)
		}
		vs, err := b.Axe()
		if err != nil {
			t.Fatalf("%s at %d px: %v", name, w, err)
		}
		for _, v := range vs {
			if v.Serious() {
				t.Errorf("%s at %d px: axe-core: %s", name, w, v)
			} else {
				t.Logf("%s at %d px: axe-core (%s, not failing): %s", name, w, v.Impact, v)
			}
		}
		if over, culprits, err := b.Overflow(); err != nil {
			t.Errorf("%s at %d px: %v", name, w, err)
		} else if over > 0 {
			t.Errorf("%s at %d px: the page is %d px wider than the window (%s)", name, w, over, strings.Join(culprits, ", "))
		}
	}
}

// Press sends keys to the focused element: kb.Tab, kb.Enter, text.
func (b *Browser) Press(keys string) error {
	if err := b.do(chromedp.KeyEvent(keys)); err != nil {
		return fmt.Errorf("press %q: %w", keys, err)
	}
	return nil
}

// maxTabs bounds TabTo: the pages have a dozen focusable elements.
const maxTabs = 40

// TabTo presses Tab from the top of the page until the element with id has
// the focus, as a keyboard user would, and returns how many presses it
// took. With checkFocus it checks on the way that every element that takes
// the focus shows it (an outline of 2 px or more, or a shadow).
func (b *Browser) TabTo(id string, checkFocus bool) (int, error) {
	// Start from the document, as after loading a page.
	if err := b.do(chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur(); window.getSelection().removeAllRanges();`)); err != nil {
		return 0, err
	}
	for i := 1; i <= maxTabs; i++ {
		if err := b.Press(kb.Tab); err != nil {
			return i, err
		}
		f, err := b.focused()
		if err != nil {
			return i, err
		}
		if checkFocus && !f.Shown {
			return i, fmt.Errorf("the focus on %s is not visible (no outline or shadow)", f.Name)
		}
		if f.ID == id {
			return i, nil
		}
	}
	return maxTabs, fmt.Errorf("#%s never took the focus in %d presses of Tab", id, maxTabs)
}

// focus describes the focused element.
type focus struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Shown bool   `json:"shown"`
}

// focused returns the focused element and whether its focus is visible.
func (b *Browser) focused() (focus, error) {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	f, err := chromedp.Run(ctx, chromedp.Evaluate[focus](`(() => {
  const el = document.activeElement;
  if (!el || el === document.body) return {id: '', name: 'the page', shown: true};
  const s = getComputedStyle(el);
  const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
  const shadow = s.boxShadow && s.boxShadow !== 'none';
  return {id: el.id, name: el.id ? '#' + el.id : el.tagName.toLowerCase() + ' "' + (el.textContent || '').trim().slice(0, 30) + '"', shown: outline || shadow};
})()`))
	if err != nil {
		return focus{}, fmt.Errorf("read the focus: %w", err)
	}
	return f, nil
}

// WaitFor waits for the element with id to be visible.
func (b *Browser) WaitFor(id string) error {
	if err := b.do(chromedp.WaitVisible(chromedp.ID(id))); err != nil {
		return fmt.Errorf("wait for #%s: %w", id, err)
	}
	return nil
}

// SetTimeZone makes pages see tz (an IANA name) as the local time zone.
func (b *Browser) SetTimeZone(tz string) error {
	err := b.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: tz})
		return err
	}))
	if err != nil {
		return fmt.Errorf("set time zone %s: %w", tz, err)
	}
	return nil
}

// Attr returns the attribute name of the element with id ("" when it has
// none).
func (b *Browser) Attr(id, name string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(() => { const el = document.getElementById(%q); return el ? (el.getAttribute(%q) || '') : ''; })()`, id, name)))
	if err != nil {
		return "", fmt.Errorf("attribute %s of #%s: %w", name, id, err)
	}
	return v, nil
}

// Title returns the document's title.
func (b *Browser) Title() (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Title())
}

// Query returns the trimmed texts of the elements matching a CSS selector
// (none is no error).
func (b *Browser) Query(selector string) ([]string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(`Array.from(document.querySelectorAll(%q), el => el.textContent.trim())`, selector)))
}
