// chart-render renders a Helm v3 chart the way `helm template` does, without helm: Go's text/template
// with sprig's functions and the functions helm adds (include, tpl, toYaml, fromYaml, required, ...),
// .Values merged from values.yaml, -f files and --set, .Release, .Chart, .Capabilities and .Template.
// It covers the subset of helm that tern's chart uses; README.md lists it. Build and run:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o build/chart-render ./deploy/tools/chart-render
//	build/chart-render [flags] [NAME] CHART_DIR
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

// ---------------------------------------------------------------------------------------------------
// Chart metadata (Chart.yaml), with helm's field names as templates see them (.Chart.AppVersion).

type Maintainer struct {
	Name  string `yaml:"name" json:"name,omitempty"`
	Email string `yaml:"email" json:"email,omitempty"`
	URL   string `yaml:"url" json:"url,omitempty"`
}

type Metadata struct {
	Name        string            `yaml:"name"`
	Home        string            `yaml:"home"`
	Sources     []string          `yaml:"sources"`
	Version     string            `yaml:"version"`
	Description string            `yaml:"description"`
	Keywords    []string          `yaml:"keywords"`
	Maintainers []*Maintainer     `yaml:"maintainers"`
	Icon        string            `yaml:"icon"`
	APIVersion  string            `yaml:"apiVersion"`
	Condition   string            `yaml:"condition"`
	Tags        string            `yaml:"tags"`
	AppVersion  string            `yaml:"appVersion"`
	Deprecated  bool              `yaml:"deprecated"`
	Annotations map[string]string `yaml:"annotations"`
	KubeVersion string            `yaml:"kubeVersion"`
	Type        string            `yaml:"type"`
	// Dependencies are refused (subcharts are not supported).
	Dependencies []interface{} `yaml:"dependencies"`
}

// ---------------------------------------------------------------------------------------------------
// .Capabilities

type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (k KubeVersion) String() string     { return k.Version }
func (k KubeVersion) GitVersion() string { return k.Version }

type VersionSet []string

// Has is true for a group/version ("apps/v1") or group/version/kind ("apps/v1/Deployment") in the set.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

const defaultKubeVersion = "v1.31.0"

type HelmVersion struct {
	Version string
}

type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion HelmVersion
}

// The built-in API versions `helm template` assumes without a cluster (group/version and
// group/version/kind of the kinds charts commonly use).
var defaultAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1",
	"apiextensions.k8s.io/v1", "networking.k8s.io/v1", "autoscaling/v2", "coordination.k8s.io/v1",
	"scheduling.k8s.io/v1", "admissionregistration.k8s.io/v1", "discovery.k8s.io/v1",
	"v1/Pod", "v1/Service", "v1/ServiceAccount", "v1/ConfigMap", "v1/Secret", "v1/PersistentVolumeClaim",
	"apps/v1/Deployment", "apps/v1/DaemonSet", "apps/v1/StatefulSet", "policy/v1/PodDisruptionBudget",
	"rbac.authorization.k8s.io/v1/ClusterRole", "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
	"rbac.authorization.k8s.io/v1/Role", "rbac.authorization.k8s.io/v1/RoleBinding",
	"storage.k8s.io/v1/CSIDriver", "storage.k8s.io/v1/StorageClass",
	"apiextensions.k8s.io/v1/CustomResourceDefinition",
}

// ---------------------------------------------------------------------------------------------------
// Values: YAML read as helm reads it (through JSON: numbers become float64), merged as helm merges.

func yamlToJSONValue(data []byte, what string) (interface{}, error) {
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	j, err := json.Marshal(jsonable(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	var out interface{}
	if err := json.Unmarshal(j, &out); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	return out, nil
}

// jsonable turns yaml.v2's map[interface{}]interface{} into map[string]interface{}, recursively.
func jsonable(v interface{}) interface{} {
	switch x := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []interface{}:
		for i := range x {
			x[i] = jsonable(x[i])
		}
		return x
	default:
		return v
	}
}

func readValuesFile(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	v, err := yamlToJSONValue(data, file)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := v.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: the top level must be a map", file)
	}
	return m, nil
}

// mergeMaps lays `over` onto `dst` (later -f files and --set over earlier ones): maps are merged
// recursively, anything else replaced.
func mergeMaps(dst, over map[string]interface{}) map[string]interface{} {
	for k, v := range over {
		if vm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = mergeMaps(dm, vm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// coalesce gives the user's values precedence over the chart's defaults; a user's null removes the
// key (helm's rule for overriding a default with nothing).
func coalesce(user, defaults map[string]interface{}) map[string]interface{} {
	for k, dv := range defaults {
		uv, present := user[k]
		if !present {
			user[k] = dv
			continue
		}
		if uv == nil {
			delete(user, k)
			continue
		}
		um, uok := uv.(map[string]interface{})
		dm, dok := dv.(map[string]interface{})
		if uok && dok {
			user[k] = coalesce(um, dm)
		}
	}
	return user
}

// ---------------------------------------------------------------------------------------------------
// --set parsing: a.b.c=v, several separated by commas, list items name[0]=v, lists {a,b}; backslash
// escapes , . = [ { } and itself. Values typed as helm types them (true/false, null, integers) unless
// given with --set-string.

func splitUnescaped(s string, sep rune, keepEscapes bool) []string {
	var parts []string
	var cur strings.Builder
	depth := 0
	esc := false
	for _, r := range s {
		switch {
		case esc:
			if keepEscapes {
				cur.WriteRune('\\')
			}
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			esc = true
		case r == '{':
			depth++
			cur.WriteRune(r)
		case r == '}':
			depth--
			cur.WriteRune(r)
		case r == sep && depth == 0:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if esc {
		cur.WriteRune('\\')
	}
	return append(parts, cur.String())
}

func unescape(s string) string {
	var b strings.Builder
	esc := false
	for _, r := range s {
		if !esc && r == '\\' {
			esc = true
			continue
		}
		esc = false
		b.WriteRune(r)
	}
	return b.String()
}

func typedVal(s string, asString bool) interface{} {
	if asString {
		return s
	}
	switch {
	case strings.EqualFold(s, "true"):
		return true
	case strings.EqualFold(s, "false"):
		return false
	case strings.EqualFold(s, "null"):
		return nil
	case s == "0":
		return int64(0)
	}
	if s != "" && s[0] != '0' {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i
		}
	}
	return s
}

var indexRe = regexp.MustCompile(`^(.*)\[(\d+)\]$`)

func parseSet(expr string, asString bool, into map[string]interface{}) error {
	for _, assign := range splitUnescaped(expr, ',', true) {
		if assign == "" {
			continue
		}
		kv := splitUnescaped(assign, '=', true)
		if len(kv) < 2 {
			return fmt.Errorf("--set %q: expected key=value", assign)
		}
		key, raw := kv[0], strings.Join(kv[1:], "=")
		var val interface{}
		if strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") && !strings.HasSuffix(raw, "\\}") {
			var list []interface{}
			inner := raw[1 : len(raw)-1]
			if inner != "" {
				for _, item := range splitUnescaped(inner, ',', false) {
					list = append(list, typedVal(item, asString))
				}
			}
			if list == nil {
				list = []interface{}{}
			}
			val = list
		} else {
			val = typedVal(unescape(raw), asString)
		}
		if err := setPath(into, splitUnescaped(key, '.', true), val); err != nil {
			return fmt.Errorf("--set %q: %v", assign, err)
		}
	}
	return nil
}

func setPath(m map[string]interface{}, keys []string, val interface{}) error {
	k := keys[0]
	idx := -1
	if g := indexRe.FindStringSubmatch(k); g != nil && !strings.HasSuffix(g[1], "\\") {
		k = g[1]
		idx, _ = strconv.Atoi(g[2])
	}
	k = unescape(k)
	if k == "" {
		return errors.New("empty key")
	}
	if idx < 0 {
		if len(keys) == 1 {
			m[k] = val
			return nil
		}
		sub, ok := m[k].(map[string]interface{})
		if !ok {
			sub = map[string]interface{}{}
			m[k] = sub
		}
		return setPath(sub, keys[1:], val)
	}
	if idx > 65536 {
		return fmt.Errorf("index %d too large", idx)
	}
	list, _ := m[k].([]interface{})
	for len(list) <= idx {
		list = append(list, nil)
	}
	if len(keys) == 1 {
		list[idx] = val
	} else {
		sub, ok := list[idx].(map[string]interface{})
		if !ok {
			sub = map[string]interface{}{}
			list[idx] = sub
		}
		if err := setPath(sub, keys[1:], val); err != nil {
			return err
		}
	}
	m[k] = list
	return nil
}

// ---------------------------------------------------------------------------------------------------
// The functions helm adds to sprig's.

func toYAML(v interface{}) string {
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return ""
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

func fromYAML(s string) map[string]interface{} {
	v, err := yamlToJSONValue([]byte(s), "fromYaml")
	if err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	m, ok := v.(map[string]interface{})
	if !ok {
		if v == nil {
			return map[string]interface{}{}
		}
		return map[string]interface{}{"Error": "fromYaml: not a map"}
	}
	return m
}

func fromYAMLArray(s string) []interface{} {
	v, err := yamlToJSONValue([]byte(s), "fromYamlArray")
	if err != nil {
		return []interface{}{err.Error()}
	}
	a, ok := v.([]interface{})
	if !ok {
		return []interface{}{"fromYamlArray: not a list"}
	}
	return a
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(s string) []interface{} {
	var a []interface{}
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return []interface{}{err.Error()}
	}
	return a
}

func required(msg string, val interface{}) (interface{}, error) {
	if val == nil {
		return val, errors.New(msg)
	}
	if s, ok := val.(string); ok && s == "" {
		return val, errors.New(msg)
	}
	return val, nil
}

// ---------------------------------------------------------------------------------------------------
// The engine.

type Options struct {
	ReleaseName string
	Namespace   string
	KubeVersion string
	APIVersions []string
	Strict      bool
}

type Renderer struct {
	chartDir string
	meta     Metadata
	values   map[string]interface{}
	opts     Options
	tmpl     *template.Template
	files    []string // template names in sorted order
	included map[string]int
}

const maxIncludeDepth = 1000

func loadChart(dir string) (Metadata, map[string]interface{}, error) {
	var meta Metadata
	data, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return meta, nil, err
	}
	if err := yaml.UnmarshalStrict(data, &meta); err != nil {
		return meta, nil, fmt.Errorf("Chart.yaml: %v", err)
	}
	if meta.APIVersion != "v2" {
		return meta, nil, fmt.Errorf("Chart.yaml: apiVersion %q (only v2 charts are supported)", meta.APIVersion)
	}
	if meta.Name == "" || meta.Version == "" {
		return meta, nil, errors.New("Chart.yaml: name and version are required")
	}
	if len(meta.Dependencies) > 0 {
		return meta, nil, errors.New("Chart.yaml: dependencies (subcharts) are not supported")
	}
	if meta.Type != "" && meta.Type != "application" {
		return meta, nil, fmt.Errorf("Chart.yaml: type %q cannot be rendered", meta.Type)
	}
	defaults := map[string]interface{}{}
	if _, err := os.Stat(filepath.Join(dir, "values.yaml")); err == nil {
		if defaults, err = readValuesFile(filepath.Join(dir, "values.yaml")); err != nil {
			return meta, nil, err
		}
	}
	return meta, defaults, nil
}

func NewRenderer(dir string, user map[string]interface{}, opts Options) (*Renderer, error) {
	meta, defaults, err := loadChart(dir)
	if err != nil {
		return nil, err
	}
	if meta.KubeVersion != "" {
		// As helm: the chart's kubeVersion constraint against the Kubernetes version rendered for.
		c, err := semver.NewConstraint(meta.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("Chart.yaml: kubeVersion %q: %v", meta.KubeVersion, err)
		}
		kv := opts.KubeVersion
		if kv == "" {
			kv = defaultKubeVersion
		}
		v, err := semver.NewVersion(kv)
		if err != nil {
			return nil, fmt.Errorf("--kube-version %q: %v", kv, err)
		}
		if !c.Check(v) {
			return nil, fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", meta.KubeVersion, kv)
		}
	}
	r := &Renderer{chartDir: dir, meta: meta, values: coalesce(user, defaults), opts: opts, included: map[string]int{}}
	r.tmpl = template.New("gotpl")
	if opts.Strict {
		r.tmpl.Option("missingkey=error")
	} else {
		r.tmpl.Option("missingkey=zero")
	}
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["fromYamlArray"] = fromYAMLArray
	funcs["fromJson"] = fromJSON
	funcs["fromJsonArray"] = fromJSONArray
	funcs["required"] = required
	funcs["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil // as `helm template`: no cluster to look in
	}
	funcs["include"] = r.include
	funcs["tpl"] = r.tpl
	r.tmpl.Funcs(funcs)

	root := filepath.Join(dir, "templates")
	var names []string
	err = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		names = append(names, path.Join(meta.Name, filepath.ToSlash(rel)))
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(name, meta.Name+"/")))
		if err != nil {
			return nil, err
		}
		if _, err := r.tmpl.New(name).Parse(string(data)); err != nil {
			return nil, fmt.Errorf("parse error in %s: %v", name, err)
		}
	}
	r.files = names
	return r, nil
}

func (r *Renderer) context(templateName string) map[string]interface{} {
	kv := r.opts.KubeVersion
	if kv == "" {
		kv = defaultKubeVersion
	}
	if !strings.HasPrefix(kv, "v") {
		kv = "v" + kv
	}
	parts := strings.SplitN(strings.TrimPrefix(kv, "v"), ".", 3)
	for len(parts) < 2 {
		parts = append(parts, "0")
	}
	return map[string]interface{}{
		"Values": r.values,
		"Release": map[string]interface{}{
			"Name": r.opts.ReleaseName, "Namespace": r.opts.Namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart": &r.meta,
		"Capabilities": &Capabilities{
			KubeVersion: KubeVersion{Version: kv, Major: parts[0], Minor: parts[1]},
			APIVersions: append(VersionSet(append([]string{}, defaultAPIVersions...)), r.opts.APIVersions...),
			HelmVersion: HelmVersion{Version: "v3.16.0"},
		},
		"Template": map[string]interface{}{"Name": templateName, "BasePath": path.Join(r.meta.Name, "templates")},
	}
}

func (r *Renderer) include(name string, data interface{}) (string, error) {
	if r.included[name] > maxIncludeDepth {
		return "", fmt.Errorf("include %q: too deep a recursion", name)
	}
	r.included[name]++
	defer func() { r.included[name]-- }()
	var buf bytes.Buffer
	if err := r.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		return "", err
	}
	return buf.String(), nil
}

func (r *Renderer) tpl(text string, data interface{}) (string, error) {
	t, err := r.tmpl.Clone()
	if err != nil {
		return "", err
	}
	name := "tpl"
	if m, ok := data.(map[string]interface{}); ok {
		if tm, ok := m["Template"].(map[string]interface{}); ok {
			if n, ok := tm["Name"].(string); ok {
				name = n + "/tpl"
			}
		}
	}
	if _, err := t.New(name).Parse(text); err != nil {
		return "", fmt.Errorf("tpl: %v", err)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, data); err != nil {
		return "", fmt.Errorf("tpl: %v", err)
	}
	return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
}

// Render returns every template's output by name (partials, whose names start with "_", are not run).
func (r *Renderer) Render() (map[string]string, error) {
	out := map[string]string{}
	for _, name := range r.files {
		if strings.HasPrefix(path.Base(name), "_") {
			continue
		}
		var buf bytes.Buffer
		if err := r.tmpl.ExecuteTemplate(&buf, name, r.context(name)); err != nil {
			return nil, fmt.Errorf("render error in %s: %v", name, err)
		}
		out[name] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return out, nil
}

// ---------------------------------------------------------------------------------------------------
// Manifests: split at "---", each with its source, sorted by helm's install order of kinds (others
// after, by kind name), stably: the same kind keeps the order of file names and of the documents
// within a file.

var installOrder = []string{
	"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy", "PodDisruptionBudget",
	"ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
	"PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
	"ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
	"Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
}

type Manifest struct {
	Source  string
	Content string
	Kind    string
}

var sepRe = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

func SortManifests(rendered map[string]string) ([]Manifest, error) {
	var names []string
	for n := range rendered {
		names = append(names, n)
	}
	sort.Strings(names)
	var ms []Manifest
	for _, n := range names {
		if strings.HasSuffix(n, "NOTES.txt") || strings.TrimSpace(rendered[n]) == "" {
			continue
		}
		for _, doc := range sepRe.Split(rendered[n], -1) {
			doc = strings.TrimSpace(doc)
			if doc == "" {
				continue
			}
			var head struct {
				Kind string `yaml:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return nil, fmt.Errorf("YAML parse error on %s: %v", n, err)
			}
			ms = append(ms, Manifest{Source: n, Content: doc, Kind: head.Kind})
		}
	}
	order := map[string]int{}
	for i, k := range installOrder {
		order[k] = i
	}
	sort.SliceStable(ms, func(i, j int) bool {
		a, aok := order[ms[i].Kind]
		b, bok := order[ms[j].Kind]
		switch {
		case aok && bok:
			return a < b
		case aok:
			return true
		case bok:
			return false
		default:
			return ms[i].Kind < ms[j].Kind
		}
	})
	return ms, nil
}

// ---------------------------------------------------------------------------------------------------

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "chart-render: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("chart-render", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: chart-render [flags] [RELEASE_NAME] CHART_DIR\n\n"+
			"Renders a Helm v3 chart as `helm template` does (the subset in deploy/tools/chart-render/README.md).\n\n")
		fs.PrintDefaults()
	}
	var valueFiles, sets, setStrings, apiVersions, showOnly multi
	name := fs.String("name", "", "release name (default: the first argument, else the chart's name)")
	namespace := fs.String("namespace", "default", "release namespace (.Release.Namespace)")
	fs.StringVar(namespace, "n", "default", "shorthand for --namespace")
	kube := fs.String("kube-version", defaultKubeVersion, "Kubernetes version for .Capabilities.KubeVersion (and the chart's kubeVersion)")
	fs.Var(&valueFiles, "values", "a values YAML file (repeatable; later files win)")
	fs.Var(&valueFiles, "f", "shorthand for --values")
	fs.Var(&sets, "set", "key=value[,key=value] (repeatable)")
	fs.Var(&setStrings, "set-string", "key=value, the value kept a string (repeatable)")
	fs.Var(&apiVersions, "api-versions", "an extra API version for .Capabilities.APIVersions (repeatable)")
	fs.Var(&apiVersions, "a", "shorthand for --api-versions")
	fs.Var(&showOnly, "show-only", "only the manifests of this template file, e.g. templates/agent.yaml (repeatable)")
	fs.Var(&showOnly, "s", "shorthand for --show-only")
	strict := fs.Bool("strict", false, "fail on a reference to a missing value (missingkey=error) instead of rendering nothing")
	notes := fs.Bool("notes", false, "print the rendered NOTES.txt instead of the manifests")
	output := fs.String("o", "", "write to this file instead of stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pos := fs.Args()
	var chartDir string
	switch len(pos) {
	case 1:
		chartDir = pos[0]
	case 2:
		if *name == "" {
			*name = pos[0]
		}
		chartDir = pos[1]
	default:
		fs.Usage()
		return errors.New("expected [RELEASE_NAME] CHART_DIR (flags go before them)")
	}

	user := map[string]interface{}{}
	for _, f := range valueFiles {
		m, err := readValuesFile(f)
		if err != nil {
			return err
		}
		user = mergeMaps(user, m)
	}
	for _, s := range sets {
		if err := parseSet(s, false, user); err != nil {
			return err
		}
	}
	for _, s := range setStrings {
		if err := parseSet(s, true, user); err != nil {
			return err
		}
	}
	if *name == "" {
		meta, _, err := loadChart(chartDir)
		if err != nil {
			return err
		}
		*name = meta.Name
	}
	r, err := NewRenderer(chartDir, user, Options{
		ReleaseName: *name, Namespace: *namespace, KubeVersion: *kube, APIVersions: apiVersions, Strict: *strict,
	})
	if err != nil {
		return err
	}
	rendered, err := r.Render()
	if err != nil {
		return err
	}
	var b strings.Builder
	if *notes {
		for n, text := range rendered {
			if strings.HasSuffix(n, "NOTES.txt") {
				b.WriteString(text)
			}
		}
	} else {
		ms, err := SortManifests(rendered)
		if err != nil {
			return err
		}
		want := map[string]bool{}
		for _, s := range showOnly {
			want[path.Join(r.meta.Name, filepath.ToSlash(s))] = true
		}
		n := 0
		for _, m := range ms {
			if len(want) > 0 && !want[m.Source] {
				continue
			}
			fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Source, m.Content)
			n++
		}
		if len(want) > 0 && n == 0 {
			return fmt.Errorf("--show-only %s: no manifests in it", showOnly.String())
		}
	}
	if *output != "" {
		return os.WriteFile(*output, []byte(b.String()), 0o644)
	}
	_, err = os.Stdout.WriteString(b.String())
	return err
}
