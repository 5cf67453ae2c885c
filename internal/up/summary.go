package up

import (
	"fmt"
	"strings"
)

// printSummary tells the user where everything is and what to paste.
func printSummary(o Options, st State, cluster string) {
	w := o.Out
	kubectl := "kubectl --kubeconfig " + st.Kubeconfig
	if st.Kubectl != "" {
		kubectl = st.Kubectl + " --kubeconfig " + st.Kubeconfig
	}
	if !st.LocalCluster {
		kubectl = "kubectl"
		if o.Kubeconfig != "" {
			kubectl += " --kubeconfig " + o.Kubeconfig
		}
		if o.Context != "" {
			kubectl += " --context " + o.Context
		}
	}
	dnsHost, dnsPort := hostOf(st.LB.DNS), portOf(st.LB.DNS)
	var b strings.Builder
	fmt.Fprintf(&b, "\nmoat is up. Ctrl-C stops everything it started; the next moat up reuses %s.\n\n", o.StateDir)
	fmt.Fprintf(&b, "  load balancer API  %s   (ELBv2 and EC2, SigV4; region %s)\n", st.LB.API, region)
	fmt.Fprintf(&b, "  DNS                %s   (load balancer names, udp and tcp)\n", st.LB.DNS)
	fmt.Fprintf(&b, "  metrics            %s/metrics\n", st.LB.Metrics)
	fmt.Fprintf(&b, "  web console        %s   (sign in with a key of the credentials file)\n", st.LB.Console)
	fmt.Fprintf(&b, "  credentials        %s\n", st.LB.CredentialsFile)
	fmt.Fprintf(&b, "  instance groups    %s   (security groups of the instances on this host, on all their traffic)\n", st.LB.InstanceSecurityGroups)
	if st.LocalCluster {
		fmt.Fprintf(&b, "  Kubernetes API     %s   (local etcd + kube-apiserver)\n", st.KubeAPI)
	} else {
		fmt.Fprintf(&b, "  Kubernetes API     %s\n", cluster)
	}
	fmt.Fprintf(&b, "  kubeconfig         %s\n", st.Kubeconfig)
	if st.ControllerProbes != "" {
		fmt.Fprintf(&b, "  moat controller    cluster %s, VPC %s, metrics %s\n", st.ClusterName, st.VPCID, st.ControllerMetrics)
	} else {
		fmt.Fprintf(&b, "  moat controller    not started (--controller=false); VPC %s\n", st.VPCID)
	}
	fmt.Fprintf(&b, "\nKubernetes:\n\n  %s get services -A\n", kubectl)
	if st.Kubectl != "" {
		fmt.Fprintf(&b, "  (that kubectl is v1.37, built with the API server; any recent kubectl works with the kubeconfig)\n")
	}
	fmt.Fprintf(&b, "\nThe load balancers, with the AWS CLI (unset AWS_PROFILE and AWS_ACCESS_KEY_ID if you have them set):\n\n")
	fmt.Fprintf(&b, "  export AWS_SHARED_CREDENTIALS_FILE=%s AWS_REGION=%s\n", st.LB.CredentialsFile, region)
	fmt.Fprintf(&b, "  aws --endpoint-url %s elbv2 describe-load-balancers\n", st.LB.API)
	fmt.Fprintf(&b, "  aws --endpoint-url %s ec2 describe-security-groups\n", st.LB.API)
	fmt.Fprintf(&b, "  dig @%s -p %s <load balancer DNS name>\n", dnsHost, dnsPort)
	fmt.Fprintf(&b, "\nA Service of type LoadBalancer with spec.loadBalancerClass: service.k8s.aws/nlb gets a Network\n")
	fmt.Fprintf(&b, "Load Balancer with security groups.")
	if st.LocalCluster {
		fmt.Fprintf(&b, " The local cluster runs no kubelet, scheduler or controller manager:\nstand in for nodes with Node objects (providerID aws:///<zone>/<instance id> of moat lb's\ninstances) and for kube-proxy with a process on the node's IP and NodePort; moat up --demo\nshows how. Logs: %s/logs.\n\n", o.StateDir)
	} else {
		fmt.Fprintf(&b, " Logs: %s/logs.\n\n", o.StateDir)
	}
	fmt.Fprint(w, b.String())
}
