package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
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
		return &FieldError{Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty document: everything keeps its default
	}
	var p Problems
	decodeNode(doc.Content[0], rv.Elem(), "", &p)
	return p.Err()
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
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(key, n); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
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

// ApplyEnv overrides scalar fields of out from environment variables named
// prefix + the upper-cased key path joined by underscores: identity.audience
// is ONBEHALF_IDENTITY_AUDIENCE, store.embedded.path is
// ONBEHALF_STORE_EMBEDDED_PATH. Lists of strings take comma-separated values.
// Fields inside lists of structs cannot be overridden (there is no stable
// name for them); variables that name no field are ignored, because the same
// environment often carries ONBEHALF_* variables meant for other programs.
func ApplyEnv(out any, prefix string, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, prefix) {
			env[k] = v
		}
	}
	if len(env) == 0 {
		return nil
	}
	var p Problems
	applyEnv(reflect.ValueOf(out).Elem(), strings.TrimSuffix(prefix, "_"), "", env, &p)
	return p.Err()
}

func applyEnv(v reflect.Value, envName, path string, env map[string]string, p *Problems) {
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
			applyEnv(fv, name, fpath, env, p)
			continue
		}
		raw, ok := env[name]
		if !ok {
			continue
		}
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
