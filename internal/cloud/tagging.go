package cloud

import (
	"encoding/base64"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/moatlb/moat/internal/store"
)

// The Resource Groups Tagging API's GetResources: the tagged resources of the account and region,
// found by tag and type. moat serves the resources a load balancer controller tags: ELBv2 load
// balancers, target groups and listeners, and EC2 security groups. Any other type or service has
// no resources here, which is not an error (as in AWS, for a service without tagged resources).

// TagFilter selects the resources with tag Key and one of Values, or any value when there are
// none.
type TagFilter struct {
	Key    string
	Values []string
}

// GetResourcesInput is GetResources' request, as the API documents it.
type GetResourcesInput struct {
	TagFilters []TagFilter
	// ResourceTypeFilters are "service" or "service:resourceType", matched case-sensitively
	// against the resources' ARNs.
	ResourceTypeFilters []string
	// ResourceARNs asks for these resources only; it excludes the filters and the paging.
	ResourceARNs     []string
	PaginationToken  string
	ResourcesPerPage *int
	TagsPerPage      *int
	// IncludeComplianceDetails and ExcludeCompliantResources are accepted, and answered without
	// compliance data: moat has no tag policies.
	IncludeComplianceDetails  bool
	ExcludeCompliantResources bool
}

// TaggedResource is one resource of GetResources' answer. Tags are the record's own: read them,
// never write through them.
type TaggedResource struct {
	ARN  string
	Tags Tags
}

// Documented limits of GetResources' parameters.
const (
	maxTagFilters          = 50
	maxTagFilterValues     = 20
	maxResourceTypeFilters = 100
	maxResourceARNs        = 100
	maxResourceARNLength   = 1011
	maxTagKeyLength        = 128 // characters, as the lengths below
	maxTagValueLength      = 256
	maxResourceTypeLength  = 256
	maxPaginationToken     = 2048
	minResourcesPerPage    = 1
	maxResourcesPerPage    = 100
	minTagsPerPage         = 100
	maxTagsPerPage         = 500
	// defaultResourcesPerPage: AWS documents no default page size.
	defaultResourcesPerPage = 50
)

func invalidParameter(format string, args ...any) *Error {
	return errorf("InvalidParameterException", format, args...)
}

// GetResources returns the tagged resources that in's filters select, in ARN order, one page at
// a time, and the token of the next page ("" on the last). Only tagged resources are returned:
// AWS also returns resources that had tags and lost them all, but moat keeps no such history, so
// a resource whose last tag is removed is no longer found, as one never tagged. The answer comes
// from one view of the store, so it is consistent across the kinds of resources.
func (c *Cloud) GetResources(in GetResourcesInput) ([]TaggedResource, string, error) {
	if err := validateGetResources(in); err != nil {
		return nil, "", err
	}
	after := ""
	if in.PaginationToken != "" {
		last, err := base64.RawURLEncoding.DecodeString(in.PaginationToken)
		if err != nil || !strings.HasPrefix(string(last), "arn:") { // a token is the last ARN answered
			return nil, "", invalidParameter("The specified pagination token is not valid: %s", in.PaginationToken)
		}
		after = string(last)
	}
	var found []TaggedResource
	err := c.store.View(func(tx store.Tx) error {
		var err error
		if len(in.ResourceARNs) > 0 {
			found, err = c.taggedByARN(tx, in.ResourceARNs)
		} else {
			found, err = c.taggedByFilters(tx, in.TagFilters, in.ResourceTypeFilters)
		}
		return err
	})
	if err != nil || len(in.ResourceARNs) > 0 {
		return found, "", err
	}
	start, _ := slices.BinarySearchFunc(found, after, func(r TaggedResource, arn string) int {
		if r.ARN <= arn {
			return -1
		}
		return 1
	})
	page := pageOfTagged(found[start:], in.ResourcesPerPage, in.TagsPerPage)
	next := ""
	if start+len(page) < len(found) {
		next = base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1].ARN))
	}
	return page, next, nil
}

func validateGetResources(in GetResourcesInput) error {
	if len(in.ResourceARNs) > 0 {
		if len(in.TagFilters) > 0 || len(in.ResourceTypeFilters) > 0 {
			return invalidParameter("ResourceARNList cannot be used with TagFilters or ResourceTypeFilters")
		}
		if in.ResourcesPerPage != nil || in.TagsPerPage != nil || in.PaginationToken != "" {
			return invalidParameter("ResourceARNList cannot be used with ResourcesPerPage, TagsPerPage or PaginationToken")
		}
		if len(in.ResourceARNs) > maxResourceARNs {
			return invalidParameter("ResourceARNList can have at most %d items, not %d", maxResourceARNs, len(in.ResourceARNs))
		}
		for _, arn := range in.ResourceARNs {
			if arn == "" || utf8.RuneCountInString(arn) > maxResourceARNLength {
				return invalidParameter("ResourceARN must be 1 to %d characters long: %q", maxResourceARNLength, arn)
			}
		}
	}
	if len(in.TagFilters) > maxTagFilters {
		return invalidParameter("TagFilters can have at most %d items, not %d", maxTagFilters, len(in.TagFilters))
	}
	for _, f := range in.TagFilters {
		if f.Key == "" || utf8.RuneCountInString(f.Key) > maxTagKeyLength {
			return invalidParameter("TagFilter Key must be 1 to %d characters long: %q", maxTagKeyLength, f.Key)
		}
		if len(f.Values) > maxTagFilterValues {
			return invalidParameter("TagFilter %s can have at most %d values, not %d", f.Key, maxTagFilterValues, len(f.Values))
		}
		for _, v := range f.Values {
			if utf8.RuneCountInString(v) > maxTagValueLength {
				return invalidParameter("TagFilter %s value must be at most %d characters long", f.Key, maxTagValueLength)
			}
		}
	}
	if len(in.ResourceTypeFilters) > maxResourceTypeFilters {
		return invalidParameter("ResourceTypeFilters can have at most %d items, not %d", maxResourceTypeFilters, len(in.ResourceTypeFilters))
	}
	for _, t := range in.ResourceTypeFilters {
		if utf8.RuneCountInString(t) > maxResourceTypeLength {
			return invalidParameter("ResourceTypeFilter must be at most %d characters long: %q", maxResourceTypeLength, t)
		}
	}
	if p := in.ResourcesPerPage; p != nil && (*p < minResourcesPerPage || *p > maxResourcesPerPage) {
		return invalidParameter("ResourcesPerPage must be between %d and %d, not %d", minResourcesPerPage, maxResourcesPerPage, *p)
	}
	if p := in.TagsPerPage; p != nil && (*p < minTagsPerPage || *p > maxTagsPerPage) {
		return invalidParameter("TagsPerPage must be between %d and %d, not %d", minTagsPerPage, maxTagsPerPage, *p)
	}
	if len(in.PaginationToken) > maxPaginationToken {
		return invalidParameter("PaginationToken must be at most %d characters long", maxPaginationToken)
	}
	if in.ExcludeCompliantResources && !in.IncludeComplianceDetails {
		return invalidParameter("ExcludeCompliantResources can be used only with IncludeComplianceDetails set to true")
	}
	return nil
}

// pageOfTagged is the first page of resources: at most perPage of them (default
// defaultResourcesPerPage), and, with tagsPerPage, as many whole resources as have that many tags
// in all (a resource without tags counting one), but at least one.
func pageOfTagged(resources []TaggedResource, perPage, tagsPerPage *int) []TaggedResource {
	n := defaultResourcesPerPage
	if perPage != nil {
		n = *perPage
	}
	n = min(n, len(resources))
	if tagsPerPage == nil {
		return resources[:n]
	}
	tags := 0
	for i, r := range resources[:n] {
		tags += max(len(r.Tags), 1)
		if i > 0 && tags > *tagsPerPage {
			return resources[:i]
		}
	}
	return resources[:n]
}

// taggedKind is one kind of resource GetResources serves: its service and type as resource type
// filters and ARNs name them, and how to find its tagged resources in the kind's index.
type taggedKind struct {
	service, resourceType string
	// candidates are the resources that can match filters, narrowed by the index's tags.
	candidates func(tx store.Tx, filters []TagFilter) ([]TaggedResource, error)
	// lookup finds the resource of an ARN of the kind.
	lookup func(tx store.Tx, arn string) (TaggedResource, bool, error)
}

// indexedKind is a taggedKind over an index: parts are its tags and records, key the record key
// of an ARN, and view a record's ARN and tags.
func indexedKind[T any, I any](service, resourceType string, index func(store.Tx) (I, error), parts func(I) (tagIndex, sortedMap[T]),
	key func(arn string) string, view func(T) TaggedResource) taggedKind {
	return taggedKind{
		service:      service,
		resourceType: resourceType,
		candidates: func(tx store.Tx, filters []TagFilter) ([]TaggedResource, error) {
			idx, err := index(tx)
			if err != nil {
				return nil, err
			}
			tags, records := parts(idx)
			matched := taggedRecords(tags, records, filters)
			out := make([]TaggedResource, 0, len(matched))
			for _, r := range matched {
				out = append(out, view(r))
			}
			return out, nil
		},
		lookup: func(tx store.Tx, arn string) (TaggedResource, bool, error) {
			idx, err := index(tx)
			if err != nil {
				return TaggedResource{}, false, err
			}
			_, records := parts(idx)
			r, ok := records.get(key(arn))
			if !ok {
				return TaggedResource{}, false, nil
			}
			return view(r), true, nil
		},
	}
}

func (c *Cloud) taggedKinds() []taggedKind {
	sameARN := func(arn string) string { return arn }
	groupPrefix := c.groupARN("")
	return []taggedKind{
		indexedKind("elasticloadbalancing", kindLoadBalancer, c.lbIndex,
			func(x *lbIndex) (tagIndex, sortedMap[LoadBalancer]) { return x.tags, x.byARN }, sameARN,
			func(lb LoadBalancer) TaggedResource { return TaggedResource{lb.ARN, lb.Tags} }),
		indexedKind("elasticloadbalancing", kindTargetGroup, c.tgIndex,
			func(x *tgIndex) (tagIndex, sortedMap[TargetGroup]) { return x.tags, x.byARN }, sameARN,
			func(tg TargetGroup) TaggedResource { return TaggedResource{tg.ARN, tg.Tags} }),
		indexedKind("elasticloadbalancing", kindListener, c.listenerIndex,
			func(x *listenerIndex) (tagIndex, sortedMap[Listener]) { return x.tags, x.byARN }, sameARN,
			func(l Listener) TaggedResource { return TaggedResource{l.ARN, l.Tags} }),
		indexedKind("ec2", "security-group", c.groupIndex,
			func(x *groupIndex) (tagIndex, sortedMap[SecurityGroup]) { return x.tags, x.byID },
			func(arn string) string { return strings.TrimPrefix(arn, groupPrefix) },
			func(sg SecurityGroup) TaggedResource { return TaggedResource{groupPrefix + sg.ID, sg.Tags} }),
	}
}

// groupARN is the ARN of a security group, as EC2 forms it.
func (c *Cloud) groupARN(id string) string {
	return "arn:aws:ec2:" + c.cfg.Region + ":" + c.cfg.AccountID + ":security-group/" + id
}

// selects tells whether resource type filters select the kind: none, its service, or its
// service:type.
func (k taggedKind) selects(typeFilters []string) bool {
	return len(typeFilters) == 0 || slices.ContainsFunc(typeFilters, func(f string) bool {
		return f == k.service || f == k.service+":"+k.resourceType
	})
}

// taggedByFilters are the tagged resources of the kinds typeFilters select that match every tag
// filter, in ARN order.
func (c *Cloud) taggedByFilters(tx store.Tx, tagFilters []TagFilter, typeFilters []string) ([]TaggedResource, error) {
	var out []TaggedResource
	for _, kind := range c.taggedKinds() {
		if !kind.selects(typeFilters) {
			continue
		}
		candidates, err := kind.candidates(tx, tagFilters)
		if err != nil {
			return nil, err
		}
		for _, r := range candidates {
			if len(r.Tags) > 0 && matchesTagFilters(r.Tags, tagFilters) {
				out = append(out, r)
			}
		}
	}
	slices.SortFunc(out, func(a, b TaggedResource) int { return strings.Compare(a.ARN, b.ARN) })
	return out, nil
}

func matchesTagFilters(tags Tags, filters []TagFilter) bool {
	for _, f := range filters {
		v, ok := tags[f.Key]
		if !ok || (len(f.Values) > 0 && !slices.Contains(f.Values, v)) {
			return false
		}
	}
	return true
}

// taggedByARN are the tagged resources of arns, in ARN order, each once. An ARN of no
// resource here (another account, region, service or type, or a resource that does not exist)
// is left out, as AWS leaves out one that does not exist.
func (c *Cloud) taggedByARN(tx store.Tx, arns []string) ([]TaggedResource, error) {
	var out []TaggedResource
	kinds := c.taggedKinds()
	for _, arn := range dedupe(arns) {
		service, resourceType, ok := c.arnType(arn)
		if !ok {
			continue
		}
		i := slices.IndexFunc(kinds, func(k taggedKind) bool { return k.service == service && k.resourceType == resourceType })
		if i < 0 {
			continue
		}
		r, found, err := kinds[i].lookup(tx, arn)
		if err != nil {
			return nil, err
		}
		if found && len(r.Tags) > 0 {
			out = append(out, r)
		}
	}
	return out, nil
}

// arnType splits an ARN of this partition, region and account into its service and resource
// type (the resource part up to its first / or :).
func (c *Cloud) arnType(arn string) (service, resourceType string, ok bool) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] != "aws" || parts[3] != c.cfg.Region || parts[4] != c.cfg.AccountID {
		return "", "", false
	}
	resourceType, _, _ = strings.Cut(parts[5], "/")
	resourceType, _, _ = strings.Cut(resourceType, ":")
	return parts[2], resourceType, true
}
