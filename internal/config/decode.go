package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxFileSize bounds a configuration file. Real configs are a few kilobytes;
// the bound only stops a wrong path (a log, a device) from being slurped.
const maxFileSize = 4 << 20

// Load reads the YAML file at path into out (a pointer to a struct that
// already holds its defaults), then applies ONBEHALF_* overrides from environ
// (see ApplyEnv). Every problem found is reported at once, each with its key
// path. It does not validate values: the caller runs Validate afterwards.
func Load(path string, out any, environ []string) error {
	data, err := readFile(path)
	if err != nil {
		return err
	}
	var p Problems
	p.Add("", Decode(data, out))
	p.Add("", ApplyEnv(out, EnvPrefix, environ))
	return p.Err()
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if st.Size() > maxFileSize {
		return nil, fmt.Errorf("read config %s: larger than %d bytes", path, maxFileSize)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return data, nil
}

// Decode parses YAML into out, a pointer to a struct whose fields carry yaml
// tags, and reports every problem at once, each with its key path
// (`routes[0].prot: unknown key (did you mean "port"?)`). yaml.v3's
// KnownFields mode collects unknown fields and type mismatches too, but names
// them by line and Go type (`line 4: field prot not found in type
// injector.RouteConfig`), and a mapping with a duplicate key is reported alone
// and not decoded further. Decode walks the parsed node tree itself so that it
// can name paths, suggest the nearest known key, report a duplicate key and
// still check its siblings, and word duration errors its own way. A YAML
// syntax error is still reported alone: the document must parse before
// anything is decoded. Keys absent from the document keep the values out
// already holds, so defaults are set by filling out before calling Decode.
func Decode(data []byte, out any) error {
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("config: decode target must be a non-nil pointer")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return syntaxError(data, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty document: everything keeps its default
	}
	var p Problems
	decodeNode(doc.Content[0], rv.Elem(), "", &p)
	return p.Err()
}

// maxLocateParses bounds the prefixes syntaxError parses to find the line
// of a syntax error: configuration files are a few hundred lines, and a
// file far longer keeps the line yaml.v3 named.
const maxLocateParses = 2000

// syntaxError describes a document yaml.v3 cannot parse, naming the line
// the problem is on. yaml.v3 names the line where the enclosing construct
// began rather than the offending one, and counts it from 0 for parser
// errors but from 1 for scanner errors (go-yaml/yaml#205): "proxy:" on
// line 1 with a badly indented key on line 6 is reported as line 5. The
// offending line is the first one at which the document read so far fails
// with the same problem: every shorter prefix either parses or fails for
// another reason (an unclosed quote that a later line closes).
func syntaxError(data []byte, err error) error {
	line, problem := splitYAMLError(err)
	if line > 0 {
		if l := locateSyntaxError(data, problem, line); l > 0 {
			line = l
		}
		return &FieldError{Msg: fmt.Sprintf("invalid YAML at line %d: %s", line, problem)}
	}
	return &FieldError{Msg: "invalid YAML: " + problem}
}

// splitYAMLError splits "yaml: line 4: found a tab character" into 4 and
// the problem; line is 0 when the message names none.
func splitYAMLError(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	rest, ok := strings.CutPrefix(msg, "line ")
	if !ok {
		return 0, msg
	}
	num, problem, ok := strings.Cut(rest, ": ")
	n, aerr := strconv.Atoi(num)
	if !ok || aerr != nil || n <= 0 {
		return 0, msg
	}
	return n, problem
}

// locateSyntaxError returns the first line L (from 1) such that the first L
// lines of data fail to parse with problem, or 0. yaml.v3's line from is at
// most one past the construct that holds the error, so the search starts
// just before it.
func locateSyntaxError(data []byte, problem string, from int) int {
	ends := lineEnds(data)
	start := max(1, from-1)
	for l := start; l <= len(ends) && l-start < maxLocateParses; l++ {
		var n yaml.Node
		err := yaml.Unmarshal(data[:ends[l-1]], &n)
		if err == nil {
			continue
		}
		if _, p := splitYAMLError(err); p == problem {
			return l
		}
	}
	return 0
}

// lineEnds returns the offset just past each line of data (after its
// newline), the last line included even without one.
func lineEnds(data []byte) []int {
	var ends []int
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	return ends
}

// Defaulter is implemented by configuration structs that need their
// defaults when the decoder creates them from nothing: behind a nil pointer,
// as a new map entry or as a list item, where no default value existed to
// decode over.
type Defaulter interface{ SetDefaults() }

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// setDefaults calls SetDefaults on v (addressable) when it has one.
func setDefaults(v reflect.Value) {
	if v.CanAddr() {
		if d, ok := v.Addr().Interface().(Defaulter); ok {
			d.SetDefaults()
		}
	}
}

func decodeNode(n *yaml.Node, v reflect.Value, path string, p *Problems) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			p.Addf(path, "%s", cleanYAMLError(err))
		}
		return
	}
	switch {
	case v.Type() == durationType:
		decodeDuration(n, v, path, p)
		return
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
			setDefaults(v.Elem())
		}
		decodeNode(n, v.Elem(), path, p)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		decodeStruct(n, v, path, p)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			p.Addf(path, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			setDefaults(s.Index(i))
			decodeNode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), p)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			p.Addf(path, "must be a mapping")
			return
		}
		if v.Type().Key().Kind() != reflect.String {
			p.Addf(path, "unsupported map key type %s", v.Type().Key())
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if m.MapIndex(reflect.ValueOf(key).Convert(v.Type().Key())).IsValid() {
				p.Addf(JoinPath(path, key), "key appears more than once")
				continue
			}
			val := reflect.New(v.Type().Elem()).Elem()
			setDefaults(val)
			decodeNode(n.Content[i+1], val, JoinPath(path, key), p)
			m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), val)
		}
		v.Set(m)
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			p.Addf(path, "%s", cleanYAMLError(err))
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			p.Addf(path, "must be a %s", kindName(v.Type()))
			return
		}
		tmp := reflect.New(v.Type())
		if err := n.Decode(tmp.Interface()); err != nil {
			p.Addf(path, "must be a %s, got %q", kindName(v.Type()), n.Value)
			return
		}
		v.Set(tmp.Elem())
	}
}

func decodeStruct(n *yaml.Node, v reflect.Value, path string, p *Problems) {
	if n.Kind != yaml.MappingNode {
		p.Addf(path, "must be a mapping")
		return
	}
	fields := fieldsOf(v.Type())
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		if seen[key] {
			p.Addf(JoinPath(path, key), "key appears more than once")
			continue
		}
		seen[key] = true
		idx, ok := fields.byName[key]
		if !ok {
			p.Addf(JoinPath(path, key), "unknown key%s", suggest(key, fields.names))
			continue
		}
		decodeNode(n.Content[i+1], v.FieldByIndex(idx), JoinPath(path, key), p)
	}
}

func decodeDuration(n *yaml.Node, v reflect.Value, path string, p *Problems) {
	if n.Kind != yaml.ScalarNode {
		p.Addf(path, "must be a duration such as \"10s\"")
		return
	}
	d, err := parseDuration(n.Value)
	if err != nil {
		p.Addf(path, "%v", err)
		return
	}
	v.SetInt(int64(d))
}

func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("must be a duration such as \"10s\" or \"1m30s\", got %q", s)
	}
	return d, nil
}

// structFields maps yaml key names to field indexes for one struct type.
type structFields struct {
	byName map[string][]int
	names  []string
	// order keeps the declaration order, for ApplyEnv.
	order []fieldInfo
}

type fieldInfo struct {
	name  string
	index []int
}

var fieldCache sync.Map // reflect.Type → *structFields

func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	sf := &structFields{byName: map[string][]int{}}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			index := append(append([]int(nil), prefix...), i)
			if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
				walk(f.Type, index)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			sf.byName[name] = index
			sf.names = append(sf.names, name)
			sf.order = append(sf.order, fieldInfo{name: name, index: index})
		}
	}
	walk(t, nil)
	fieldCache.Store(t, sf)
	return sf
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole number"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	}
	return t.Kind().String()
}

// Suggest returns ` (did you mean "x"?)` when one of names is one edit or a
// transposition away from key, else "": the hint for a misspelt name.
func Suggest(key string, names []string) string { return suggest(key, names) }

// suggest returns ` (did you mean "x"?)` when a known key is one edit or a
// transposition away from key, else "".
func suggest(key string, names []string) string {
	best := Nearest(key, names)
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// Nearest returns the name in names closest to s within two edits
// (insertions, deletions, substitutions), or "" when none is that close:
// the "did you mean" of every name a person types.
func Nearest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func cleanYAMLError(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = strings.TrimPrefix(s, "unmarshal errors:\n  ")
	return s
}

// EnvPrefix is the prefix of environment overrides.
const EnvPrefix = "ONBEHALF_"

// NotConfigEnv lists ONBEHALF_* variables that are not configuration
// keys and that ApplyEnv therefore leaves alone: the ones the example
// agents read (the sidecar's CA and the assertion) and the ones the
// Makefile and tests set (the binary under test, the Vault, kube-apiserver
// and kubectl test binaries, the browser tests' screenshot folder).
var NotConfigEnv = []string{
	"ONBEHALF_ASSERTION",
	"ONBEHALF_BIN",
	"ONBEHALF_CA",
	"ONBEHALF_KUBECTL_BIN",
	"ONBEHALF_KUBE_APISERVER_BIN",
	"ONBEHALF_SCREENSHOTS",
	"ONBEHALF_VAULT_BIN",
}

// ApplyEnv overrides scalar fields of out from environment variables named
// prefix + the upper-cased key path joined by underscores: identity.audience
// is ONBEHALF_IDENTITY_AUDIENCE, store.embedded.path is
// ONBEHALF_STORE_EMBEDDED_PATH. Lists of strings take comma-separated values.
// Fields inside lists of structs and maps cannot be overridden (there is no
// stable name for them). A variable with the prefix that names no field is
// a problem, with the nearest name suggested, unless NotConfigEnv lists it
// or it is one of the variables Kubernetes sets for Services (serviceLink):
// a misspelt override would otherwise be ignored without a word.
func ApplyEnv(out any, prefix string, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, prefix) && !slices.Contains(NotConfigEnv, k) {
			env[k] = v
		}
	}
	if len(env) == 0 {
		return nil
	}
	var p Problems
	root := strings.TrimSuffix(prefix, "_")
	used := make(map[string]bool, len(env))
	applyEnv(reflect.ValueOf(out).Elem(), root, "", env, used, &p)
	var unknown []string
	for k, v := range env {
		if !used[k] && !serviceLink(k, v) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		names := envNames(reflect.TypeOf(out).Elem(), root, 0)
		for _, k := range unknown {
			p.Addf("", "environment variable %s matches no configuration key%s; unset it or correct its name", k, suggestEnv(k, names))
		}
	}
	return p.Err()
}

// serviceLinkName matches the variables Kubernetes sets in every container
// for each Service of the pod's namespace (unless the pod turns
// enableServiceLinks off): for a Service "onbehalf-connect" with port 80,
// ONBEHALF_CONNECT_SERVICE_HOST, ONBEHALF_CONNECT_SERVICE_PORT[_NAME],
// ONBEHALF_CONNECT_PORT and ONBEHALF_CONNECT_PORT_80_TCP[_PROTO|_PORT|_ADDR].
// The chart's own Services are named like that.
var serviceLinkName = regexp.MustCompile(`_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$`)

// serviceLinkValue matches what such a variable holds: an address, a
// port, a protocol or proto://address:port.
var serviceLinkValue = regexp.MustCompile(`^([0-9A-Fa-f.:]+|[0-9]+|tcp|udp|sctp|(tcp|udp|sctp)://[0-9A-Fa-f.:\[\]]+:[0-9]+)$`)

// serviceLink reports whether name=value is a Kubernetes service link
// variable rather than a misspelt override: ApplyEnv leaves those alone.
func serviceLink(name, value string) bool {
	return serviceLinkName.MatchString(name) && serviceLinkValue.MatchString(value)
}

// maxEnvDepth bounds envNames' descent into nested sections.
const maxEnvDepth = 8

// envNames returns the variable names that can set a field of t.
func envNames(t reflect.Type, envName string, depth int) []string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == durationType || depth > maxEnvDepth {
		return nil
	}
	var out []string
	for _, f := range fieldsOf(t).order {
		ft := t.FieldByIndex(f.index).Type
		name := envName + "_" + strings.ToUpper(f.name)
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != durationType:
			out = append(out, envNames(ft, name, depth+1)...)
		case ft.Kind() == reflect.Map, ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.String:
		default:
			out = append(out, name)
		}
	}
	return out
}

// suggestEnv returns ` (did you mean X?)` for the variable name nearest to
// key: within two edits, or the only one ending in key's last part (the
// right key under a wrong section).
func suggestEnv(key string, names []string) string {
	best := Nearest(key, names)
	if best == "" {
		i := strings.LastIndexByte(key, '_')
		var match []string
		for _, n := range names {
			if i > 0 && strings.HasSuffix(n, key[i:]) {
				match = append(match, n)
			}
		}
		if len(match) == 1 {
			best = match[0]
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

func applyEnv(v reflect.Value, envName, path string, env map[string]string, used map[string]bool, p *Problems) {
	t := v.Type()
	if t.Kind() == reflect.Pointer {
		if t.Elem().Kind() != reflect.Struct {
			return
		}
		// Only descend into a nil pointer when some variable targets it.
		if v.IsNil() {
			if !anyWithPrefix(env, envName+"_") {
				return
			}
			v.Set(reflect.New(t.Elem()))
			setDefaults(v.Elem())
		}
		v, t = v.Elem(), t.Elem()
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return
	}
	for _, f := range fieldsOf(t).order {
		fv := v.FieldByIndex(f.index)
		name := envName + "_" + strings.ToUpper(f.name)
		fpath := JoinPath(path, f.name)
		if fv.Kind() == reflect.Struct || (fv.Kind() == reflect.Pointer && fv.Type().Elem().Kind() == reflect.Struct) {
			applyEnv(fv, name, fpath, env, used, p)
			continue
		}
		raw, ok := env[name]
		if !ok {
			continue
		}
		used[name] = true
		if err := setScalar(fv, raw); err != nil {
			p.Addf(fpath, "from %s: %v", name, err)
		}
	}
}

func anyWithPrefix(env map[string]string, prefix string) bool {
	for k := range env {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

func setScalar(v reflect.Value, raw string) error {
	if v.Type() == durationType {
		d, err := parseDuration(raw)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("must be a whole number, got %q", raw)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("must be a whole number, got %q", raw)
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(raw, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("must be a number, got %q", raw)
		}
		v.SetFloat(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return errors.New("cannot be set from the environment")
		}
		var parts []string
		for s := range strings.SplitSeq(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				parts = append(parts, s)
			}
		}
		s := reflect.MakeSlice(v.Type(), len(parts), len(parts))
		for i, x := range parts {
			s.Index(i).SetString(x)
		}
		v.Set(s)
	default:
		return errors.New("cannot be set from the environment")
	}
	return nil
}
