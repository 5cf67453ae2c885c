package cloud

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/moatlb/moat/internal/nlbattr"
	"github.com/moatlb/moat/internal/store"
)

// This file holds what the Elastic Load Balancing v2 resources share: ARNs, names, model
// validation errors, tags, attributes and Marker pagination.

// Attribute is one key/value attribute of a load balancer, target group or listener. Values are
// always strings on the wire, whatever they mean.
type Attribute struct {
	Key   string
	Value string
}

// ELBPage asks for one page of an ELBv2 Describe: PageSize (1-400, nil for the default of 400)
// results after Marker.
type ELBPage struct {
	PageSize *int
	Marker   string
}

// maxELBPageSize is the largest (and the default) ELBv2 page.
const maxELBPageSize = 400

// validationError is the ValidationError AWS answers for a request that breaks the API model
// (a missing required member, an enum or range violation), worded as AWS words it.
func validationError(field, value, constraint string) *Error {
	return errorf("ValidationError", "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, field, constraint)
}

// missingError is the ValidationError for a required member that is absent.
func missingError(field string) *Error {
	return errorf("ValidationError", "1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", field)
}

// checkEnum validates an optional enum member: "" (absent) passes.
func checkEnum(field, value string, allowed ...string) error {
	if value == "" || slices.Contains(allowed, value) {
		return nil
	}
	return validationError(field, value, "Member must satisfy enum value set: ["+strings.Join(allowed, ", ")+"]")
}

// checkRange validates an optional integer member against the model's min and max.
func checkRange(field string, v *int, lo, hi int) error {
	switch {
	case v == nil:
		return nil
	case *v < lo:
		return validationError(field, strconv.Itoa(*v), fmt.Sprintf("Member must have value greater than or equal to %d", lo))
	case *v > hi:
		return validationError(field, strconv.Itoa(*v), fmt.Sprintf("Member must have value less than or equal to %d", hi))
	}
	return nil
}

// Protocols of the ELBv2 model; moat's network load balancers use the first four.
var elbProtocols = []string{"HTTP", "HTTPS", "TCP", "TLS", "UDP", "TCP_UDP", "GENEVE", "QUIC", "TCP_QUIC"}

// elbName is the pattern of load balancer and target group names: 1-32 alphanumerics or
// hyphens, not starting or ending with a hyphen.
var elbName = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$`)

// validateELBName applies AWS's naming rules; kind is "Load balancer" or "Target group".
func validateELBName(kind, name string) error {
	switch {
	case name == "":
		return missingError("name")
	case len(name) > 32:
		return errorf("ValidationError", "%s name '%s' cannot be longer than '32' characters", kind, name)
	case strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-"):
		return errorf("ValidationError", "%s name '%s' cannot begin or end with '-'", kind, name)
	case !elbName.MatchString(name):
		return errorf("ValidationError", "%s name '%s' can only contain characters that are alphanumeric characters or hyphens(-)", kind, name)
	case kind == "Load balancer" && strings.HasPrefix(strings.ToLower(name), "internal-"):
		return errorf("ValidationError", "Load balancer name '%s' cannot begin with 'internal-'", name)
	}
	return nil
}

// elbARN returns the ARN of an ELBv2 resource in this region and account.
func (c *Cloud) elbARN(resource string) string {
	return "arn:aws:elasticloadbalancing:" + c.cfg.Region + ":" + c.cfg.AccountID + ":" + resource
}

// ELBv2 resource kinds, as the resource part of their ARNs begins.
const (
	kindLoadBalancer = "loadbalancer"
	kindTargetGroup  = "targetgroup"
	kindListener     = "listener"
	kindRule         = "listener-rule"
)

// arnResource splits an ELBv2 ARN into its kind and the path after it. ok is false for anything
// that is not an ELBv2 ARN.
func arnResource(arn string) (kind string, path []string, ok bool) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "elasticloadbalancing" {
		return "", nil, false
	}
	segs := strings.Split(parts[5], "/")
	return segs[0], segs[1:], true
}

// validARN reports whether arn has the shape of kind's ARNs (whatever its region or account).
func validARN(kind, arn string) bool {
	k, path, ok := arnResource(arn)
	if !ok || k != kind {
		return false
	}
	switch kind {
	case kindLoadBalancer:
		return len(path) == 3 && path[0] != "" && path[1] != "" && path[2] != ""
	case kindTargetGroup:
		return len(path) == 2 && path[0] != "" && path[1] != ""
	case kindListener:
		return len(path) == 4 && !slices.Contains(path, "")
	case kindRule:
		return len(path) == 5 && !slices.Contains(path, "")
	}
	return false
}

// checkARN validates a required ARN member of kind.
func checkARN(field, kind, arn string) error {
	if arn == "" {
		return missingError(field)
	}
	if !validARN(kind, arn) {
		names := map[string]string{kindLoadBalancer: "load balancer", kindTargetGroup: "target group", kindListener: "listener", kindRule: "rule"}
		return errorf("ValidationError", "'%s' is not a valid %s ARN", arn, names[kind])
	}
	return nil
}

// stableHex derives 16 hex digits from seed, for IDs that must not change (a listener's rule).
func stableHex(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return hex.EncodeToString(sum[:])[:16]
}

// cannedHostedZones are the Route 53 hosted zones of Network Load Balancers in AWS's regions, so
// that tools which compare them see familiar values.
var cannedHostedZones = map[string]string{
	"us-east-1":      "Z26RNL4JYFTOTI",
	"us-east-2":      "ZLMOA37VPKANP",
	"us-west-1":      "Z24FKFUX50B4VW",
	"us-west-2":      "Z18D5FSROUN65G",
	"eu-west-1":      "Z2IFOLAFXWLO4F",
	"eu-central-1":   "Z3F0SRJ5LGBH90",
	"ap-northeast-1": "Z31USIVHYNEOWT",
	"ap-southeast-1": "ZKVM4W9LS7TM",
	"ap-southeast-2": "ZCT6FZBF4DROD",
}

// canonicalHostedZoneID is the hosted zone of this region's load balancer DNS names: AWS's value
// for the regions above, a stable made-up one elsewhere.
func (c *Cloud) canonicalHostedZoneID() string {
	if id, ok := cannedHostedZones[c.cfg.Region]; ok {
		return id
	}
	return "Z" + strings.ToUpper(stableHex("hosted-zone/" + c.cfg.Region + "/" + c.cfg.DNSSuffix))[:13]
}

// elbTagPattern is ELBv2's tag pattern (keys and values): letters, spaces, digits and _.:/=+-@.
var elbTagPattern = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)

// validateELBTags applies ELBv2's tag rules to tags being added: keys of 1-128 characters,
// values of up to 256, both from the allowed characters, no aws: prefix, no key twice.
func validateELBTags(tags []Tag) error {
	seen := map[string]bool{}
	for _, t := range tags {
		switch {
		case t.Key == "" || utf8.RuneCountInString(t.Key) > 128:
			return validationError("tags.member.key", t.Key, "Member must have length between 1 and 128")
		case !elbTagPattern.MatchString(t.Key):
			return validationError("tags.member.key", t.Key, `Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`)
		case utf8.RuneCountInString(t.Value) > 256:
			return validationError("tags.member.value", t.Value, "Member must have length less than or equal to 256")
		case !elbTagPattern.MatchString(t.Value):
			return validationError("tags.member.value", t.Value, `Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`)
		case strings.HasPrefix(strings.ToLower(t.Key), "aws:"):
			return errorf("ValidationError", "Tag key '%s' is not valid: keys starting with 'aws:' are reserved", t.Key)
		case seen[t.Key]:
			return errorf("DuplicateTagKeys", "Tag key '%s' was specified more than once", t.Key)
		}
		seen[t.Key] = true
	}
	return nil
}

// upsertTags returns a copy of existing with tags upserted, and whether it stays
// within the tags-per-resource quota.
func (c *Cloud) upsertTags(existing Tags, tags []Tag) (Tags, bool) {
	out := make(Tags, len(existing)+len(tags))
	maps.Copy(out, existing)
	for _, t := range tags {
		out[t.Key] = t.Value
	}
	return out, len(out) <= c.cfg.Quotas.TagsPerResource
}

// addELBTags returns existing with tags upserted, or TooManyTags past the quota.
func (c *Cloud) addELBTags(existing Tags, tags []Tag) (Tags, error) {
	out, ok := c.upsertTags(existing, tags)
	if !ok {
		return nil, errorf("TooManyTags", "The quota for the number of tags that can be assigned to a resource has been reached (%d)", c.cfg.Quotas.TagsPerResource)
	}
	return out, nil
}

// AddTags adds or overwrites tags on load balancers, target groups, listeners and rules. Every
// resource must exist and stay within the tag quota, or nothing changes.
func (c *Cloud) AddTags(arns []string, tags []Tag) error {
	if len(arns) == 0 {
		return missingError("resourceArns")
	}
	if len(tags) == 0 {
		return missingError("tags")
	}
	if err := validateELBTags(tags); err != nil {
		return err
	}
	return c.store.Update(func(tx store.Tx) error {
		for _, arn := range dedupe(arns) {
			if err := c.editELBTags(tx, arn, func(t Tags) (Tags, error) { return c.addELBTags(t, tags) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// RemoveTags removes tags by key; keys a resource does not have are ignored.
func (c *Cloud) RemoveTags(arns []string, keys []string) error {
	if len(arns) == 0 {
		return missingError("resourceArns")
	}
	if len(keys) == 0 {
		return missingError("tagKeys")
	}
	return c.store.Update(func(tx store.Tx) error {
		for _, arn := range dedupe(arns) {
			err := c.editELBTags(tx, arn, func(t Tags) (Tags, error) {
				out := Tags{}
				for k, v := range t {
					if !slices.Contains(keys, k) {
						out[k] = v
					}
				}
				return out, nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// TagDescription is the tags of one resource, as DescribeTags answers.
type TagDescription struct {
	ResourceARN string
	Tags        Tags
}

// DescribeTags returns the tags of up to 20 resources, in the order asked.
func (c *Cloud) DescribeTags(arns []string) ([]TagDescription, error) {
	if len(arns) == 0 {
		return nil, missingError("resourceArns")
	}
	if len(arns) > 20 {
		return nil, validationError("resourceArns", strings.Join(arns, ", "), "Member must have length less than or equal to 20")
	}
	var out []TagDescription
	err := c.store.View(func(tx store.Tx) error {
		for _, arn := range arns {
			var tags Tags
			err := c.elbTags(tx, arn, func(t Tags) (Tags, error) {
				tags = t
				return t, nil
			}, false)
			if err != nil {
				return err
			}
			if tags == nil {
				tags = Tags{}
			}
			out = append(out, TagDescription{ResourceARN: arn, Tags: tags})
		}
		return nil
	})
	return out, err
}

// editELBTags applies edit to the tags of the resource arn inside tx, or returns the NotFound
// error of the ARN's kind.
func (c *Cloud) editELBTags(tx store.Tx, arn string, edit func(Tags) (Tags, error)) error {
	return c.elbTags(tx, arn, edit, true)
}

// elbTags finds the tags of the resource arn and shows them to edit; with write it saves what
// edit returns.
func (c *Cloud) elbTags(tx store.Tx, arn string, edit func(Tags) (Tags, error), write bool) error {
	kind, _, ok := arnResource(arn)
	if !ok {
		return errorf("ValidationError", "'%s' is not a valid resource ARN", arn)
	}
	switch kind {
	case kindLoadBalancer:
		return recordTags(tx, bucketLoadBalancers, arn, func(r *LoadBalancer) *Tags { return &r.Tags }, edit, write,
			errorf("LoadBalancerNotFound", "Load balancer '%s' not found", arn))
	case kindTargetGroup:
		return recordTags(tx, bucketTargetGroups, arn, func(r *TargetGroup) *Tags { return &r.Tags }, edit, write,
			errorf("TargetGroupNotFound", "Target group '%s' not found", arn))
	case kindListener:
		return recordTags(tx, bucketListeners, arn, func(r *Listener) *Tags { return &r.Tags }, edit, write,
			errorf("ListenerNotFound", "Listener '%s' not found", arn))
	case kindRule:
		l, err := listenerOfRule(tx, arn)
		if err != nil {
			return err
		}
		return recordTags(tx, bucketListeners, l.ARN, func(r *Listener) *Tags { return &r.RuleTags }, edit, write,
			errorf("RuleNotFound", "Rule '%s' not found", arn))
	case "truststore":
		return errorf("TrustStoreNotFound", "Trust store '%s' not found", arn)
	}
	return errorf("ValidationError", "'%s' is not a valid resource ARN", arn)
}

func recordTags[T any](tx store.Tx, bucket, key string, tags func(*T) *Tags, edit func(Tags) (Tags, error), write bool, notFound *Error) error {
	// Shared: edit returns new tags and the record is changed only by assigning them.
	rec, err := store.LoadShared[T](tx, bucket, key)
	if err == store.ErrNotFound {
		return notFound
	} else if err != nil {
		return err
	}
	t, err := edit(*tags(&rec))
	if err != nil || !write {
		return err
	}
	*tags(&rec) = t
	return store.Save(tx, bucket, key, rec)
}

// elbPage cuts items, sorted by key, at the page. Markers are the opaque encoding of the last
// key returned.
func elbPage[T any](items []T, key func(T) string, p ELBPage) ([]T, string, error) {
	if err := checkRange("pageSize", p.PageSize, 1, maxELBPageSize); err != nil {
		return nil, "", err
	}
	if p.Marker != "" {
		if _, err := base64.RawURLEncoding.DecodeString(p.Marker); err != nil {
			return nil, "", errorf("ValidationError", "Invalid value '%s' for marker", p.Marker)
		}
	}
	size := maxELBPageSize
	if p.PageSize != nil {
		size = *p.PageSize
	}
	return paginate(items, key, Page{MaxResults: size, NextToken: p.Marker}, 1, maxELBPageSize)
}

// attrList returns attributes as a list sorted by key.
func attrList(m map[string]string) []Attribute {
	out := make([]Attribute, 0, len(m))
	for k, v := range m {
		out = append(out, Attribute{k, v})
	}
	slices.SortFunc(out, func(a, b Attribute) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// modifyAttributes returns current with changes applied, after check has accepted every one of
// them: all or none.
func modifyAttributes(current map[string]string, changes []Attribute, check func(key, value string) error) (map[string]string, error) {
	if len(changes) == 0 {
		return nil, missingError("attributes")
	}
	out := map[string]string{}
	for k, v := range current {
		out[k] = v
	}
	for _, a := range changes {
		if err := check(a.Key, a.Value); err != nil {
			return nil, err
		}
		out[a.Key] = a.Value
	}
	return out, nil
}

// attributeCheck builds the check of modifyAttributes from a table of known keys. Keys of other
// load balancer types get AWS's "not supported" message, unknown keys its "not valid" one.
func attributeCheck(known map[string]nlbattr.Check, foreign []string, what string) func(key, value string) error {
	return func(key, value string) error {
		valid, ok := known[key]
		if !ok {
			if slices.Contains(foreign, key) {
				return errorf("InvalidConfigurationRequest", "%s attribute key '%s' is not supported on load balancers with type 'network'", what, key)
			}
			return errorf("InvalidConfigurationRequest", "Key %s not valid", key)
		}
		if msg := valid(value); msg != "" {
			return errorf("InvalidConfigurationRequest", "%s attribute '%s' value '%s' is not valid: it must be %s", what, key, value, msg)
		}
		return nil
	}
}

// ELBSnapshot is every load balancer, listener and target group at one instant: the desired
// state the data plane serves. Target groups carry their LoadBalancerARNs, and only the targets
// that are registered or still draining. Its maps and slices are shared with the store's cache:
// read them, never write through them (see store.ListShared).
type ELBSnapshot struct {
	LoadBalancers []LoadBalancer
	Listeners     []Listener
	TargetGroups  []TargetGroup
}

func (c *Cloud) elbSnapshot(tx store.Tx) (snap ELBSnapshot, err error) {
	lbs, err := c.lbIndex(tx)
	if err != nil {
		return snap, err
	}
	listeners, err := c.listenerIndex(tx)
	if err != nil {
		return snap, err
	}
	tgs, err := c.tgIndex(tx)
	if err != nil {
		return snap, err
	}
	snap.LoadBalancers, snap.Listeners = lbs.all(), listeners.all()
	now := c.cfg.Now()
	snap.TargetGroups = tgs.all()
	for i, tg := range snap.TargetGroups {
		tg.Targets = tg.CurrentTargets(now)
		snap.TargetGroups[i] = withUsers(tg, listeners.usersOf)
	}
	return snap, nil
}
