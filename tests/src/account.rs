//! The emulated account: a VPC with a subnet in each of two AZs, a launch template, the two
//! queues with their dead-letter queues (as `template.yaml` declares them), and groups.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aws_config::SdkConfig;
use aws_sdk_autoscaling as asg;
use aws_sdk_ec2 as ec2;
use aws_sdk_elasticloadbalancingv2 as elbv2;
use aws_sdk_sqs as sqs;

/// Receives before a message is dead-lettered (the template's `MaxReceiveCount`).
pub const MAX_RECEIVES: u32 = 3;

pub struct Account {
    pub ec2: ec2::Client,
    pub asg: asg::Client,
    pub sqs: sqs::Client,
    pub elbv2: elbv2::Client,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub template_id: String,
    pub spot_queue: String,
    pub spot_dlq: String,
    pub swap_queue: String,
    pub swap_dlq: String,
}

/// One instance as a group reports it, with what EC2 says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: String,
    pub lifecycle: String,
    pub spot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub state: String,
    pub image_id: String,
    pub spot: bool,
    pub subnet: String,
    pub instance_type: String,
    pub az: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub members: Vec<MemberView>,
}

impl GroupView {
    pub fn in_service(&self) -> usize {
        self.members.iter().filter(|m| m.lifecycle == "InService").count()
    }
    pub fn on_demand(&self) -> Vec<&str> {
        self.members.iter().filter(|m| !m.spot).map(|m| m.id.as_str()).collect()
    }
    pub fn spot(&self) -> Vec<&str> {
        self.members.iter().filter(|m| m.spot).map(|m| m.id.as_str()).collect()
    }
}

impl Account {
    pub async fn create(config: &SdkConfig) -> Account {
        let ec2 = ec2::Client::new(config);
        let asg = asg::Client::new(config);
        let sqs = sqs::Client::new(config);

        let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.expect("create VPC");
        let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("VPC id").to_string();
        let mut subnets = Vec::new();
        for (n, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let s = ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(format!("10.0.{}.0/20", n * 16))
                .availability_zone(*az)
                .send()
                .await
                .expect("create subnet");
            subnets.push(s.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string());
        }
        let images = ec2.describe_images().owners("amazon").send().await.expect("describe images");
        let image = images.images().iter().find_map(|i| i.image_id()).expect("moto ships AMIs").to_string();
        let lt = ec2
            .create_launch_template()
            .launch_template_name("app")
            .launch_template_data(
                ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(image)
                    .instance_type(ec2::types::InstanceType::M5Large)
                    .metadata_options(
                        ec2::types::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                            .http_tokens(ec2::types::LaunchTemplateHttpTokensState::Required)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("create launch template");
        let template_id = lt.launch_template().and_then(|t| t.launch_template_id()).expect("template id").to_string();

        let (spot_queue, spot_dlq) = Self::queue_pair(&sqs, "asg-optimizer-spot-creator.fifo", true).await;
        let (swap_queue, swap_dlq) = Self::queue_pair(&sqs, "asg-optimizer-swapper", false).await;
        let elbv2 = elbv2::Client::new(config);
        Account { ec2, asg, sqs, elbv2, vpc_id, subnets, template_id, spot_queue, spot_dlq, swap_queue, swap_dlq }
    }

    /// A queue redriving to its own dead-letter queue after [`MAX_RECEIVES`]. The visibility
    /// timeout is one second so that a failed record comes back quickly in tests.
    async fn queue_pair(sqs: &sqs::Client, name: &str, fifo: bool) -> (String, String) {
        use sqs::types::QueueAttributeName as A;
        let dlq_name = match name.strip_suffix(".fifo") {
            Some(stem) => format!("{stem}-dlq.fifo"),
            None => format!("{name}-dlq"),
        };
        let mut dlq = sqs.create_queue().queue_name(&dlq_name);
        if fifo {
            dlq = dlq.attributes(A::FifoQueue, "true");
        }
        let dlq_url = dlq.send().await.expect("create DLQ").queue_url().expect("DLQ url").to_string();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .expect("DLQ arn")
            .attributes()
            .and_then(|a| a.get(&A::QueueArn).cloned())
            .expect("DLQ arn");
        let redrive =
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": MAX_RECEIVES.to_string()}).to_string();
        let mut q = sqs
            .create_queue()
            .queue_name(name)
            .attributes(A::VisibilityTimeout, "1")
            .attributes(A::RedrivePolicy, redrive);
        if fifo {
            q = q.attributes(A::FifoQueue, "true");
        }
        let url = q.send().await.expect("create queue").queue_url().expect("queue url").to_string();
        (url, dlq_url)
    }

    /// Publishes a new version of the launch template running another AMI (groups use
    /// `$Latest`, so this is their new configuration); returns the version number and the AMI.
    pub async fn new_template_version(&self) -> (i64, String) {
        let current = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(&self.template_id)
            .versions("$Latest")
            .send()
            .await
            .expect("describe template");
        let old_ami = current.launch_template_versions()[0].launch_template_data().and_then(|d| d.image_id());
        let images = self.ec2.describe_images().owners("amazon").send().await.expect("describe images");
        let ami = images
            .images()
            .iter()
            .filter_map(|i| i.image_id())
            .find(|id| Some(*id) != old_ami)
            .expect("moto ships several AMIs")
            .to_string();
        let out = self
            .ec2
            .create_launch_template_version()
            .launch_template_id(&self.template_id)
            .source_version("$Latest")
            .launch_template_data(ec2::types::RequestLaunchTemplateData::builder().image_id(&ami).build())
            .send()
            .await
            .expect("create template version");
        let version = out.launch_template_version().and_then(|v| v.version_number()).expect("version number");
        (version, ami)
    }

    /// A group of On-Demand instances across both subnets, launched from the template.
    pub async fn add_group(&self, name: &str, min: i32, desired: i32, max: i32, opted_in: bool) {
        let mut req = self
            .asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .vpc_zone_identifier(self.subnets.join(","))
            .launch_template(
                asg::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(&self.template_id)
                    .version("$Latest")
                    .build(),
            )
            .tags(asg::types::Tag::builder().key("team").value("platform").propagate_at_launch(true).build());
        if opted_in {
            req = req
                .tags(asg::types::Tag::builder().key("AsgOptimiser").value("true").propagate_at_launch(true).build());
        }
        req.send().await.unwrap_or_else(|e| panic!("create group {name}: {e:?}"));
    }

    /// A target group in the account's VPC, attached to `group` (which registers its members).
    pub async fn add_target_group(&self, group: &str) -> String {
        let created = self
            .elbv2
            .create_target_group()
            .name(format!("tg-{group}"))
            .protocol(elbv2::types::ProtocolEnum::Http)
            .port(80)
            .vpc_id(&self.vpc_id)
            .target_type(elbv2::types::TargetTypeEnum::Instance)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create target group: {e:?}"));
        let arn = created.target_groups()[0].target_group_arn().expect("target group ARN").to_string();
        self.asg
            .attach_load_balancer_target_groups()
            .auto_scaling_group_name(group)
            .target_group_arns(&arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("attach target group to {group}: {e:?}"));
        arn
    }

    /// A launch lifecycle hook on `group`, as CodeDeploy or a bootstrap gate would put.
    pub async fn add_launch_hook(&self, group: &str) {
        self.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name("deploy")
            .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
            .heartbeat_timeout(300)
            .default_result("ABANDON")
            .send()
            .await
            .unwrap_or_else(|e| panic!("put lifecycle hook on {group}: {e:?}"));
    }

    pub async fn groups(&self) -> Vec<GroupView> {
        let out = self.asg.describe_auto_scaling_groups().send().await.expect("describe groups");
        let spots = self.spot_ids().await;
        let mut views: Vec<GroupView> = out
            .auto_scaling_groups()
            .iter()
            .map(|g| GroupView {
                name: g.auto_scaling_group_name().unwrap_or_default().into(),
                min: g.min_size().unwrap_or_default(),
                max: g.max_size().unwrap_or_default(),
                desired: g.desired_capacity().unwrap_or_default(),
                members: g
                    .instances()
                    .iter()
                    .map(|i| {
                        let id = i.instance_id().unwrap_or_default().to_string();
                        MemberView {
                            spot: spots.contains_key(&id),
                            lifecycle: i.lifecycle_state().map(|l| l.as_str().to_string()).unwrap_or_default(),
                            id,
                        }
                    })
                    .collect(),
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    pub async fn group(&self, name: &str) -> GroupView {
        self.groups().await.into_iter().find(|g| g.name == name).unwrap_or_else(|| panic!("no group {name}"))
    }

    /// Every instance of the account: id -> (state, spot).
    pub async fn instances(&self) -> BTreeMap<String, (String, bool)> {
        let mut out = BTreeMap::new();
        let mut pages = self.ec2.describe_instances().into_paginator().send();
        while let Some(page) = pages.next().await {
            for i in page.expect("describe instances").reservations().iter().flat_map(|r| r.instances()) {
                let state = i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default();
                let spot = i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot");
                out.insert(i.instance_id().unwrap_or_default().to_string(), (state, spot));
            }
        }
        out
    }

    /// Live Spot instances: id -> state.
    pub async fn spot_ids(&self) -> BTreeMap<String, String> {
        self.instances()
            .await
            .into_iter()
            .filter(|(_, (state, spot))| *spot && state != "terminated")
            .map(|(id, (s, _))| (id, s))
            .collect()
    }

    /// What EC2 says of one instance.
    pub async fn instance(&self, id: &str) -> InstanceView {
        let out = self.ec2.describe_instances().instance_ids(id).send().await.expect("describe instance");
        let i = out.reservations().iter().flat_map(|r| r.instances()).next().expect("the instance");
        InstanceView {
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
            image_id: i.image_id().unwrap_or_default().to_string(),
            spot: i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
            subnet: i.subnet_id().unwrap_or_default().to_string(),
            instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
            az: i.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_string(),
            tags: i
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                .collect(),
        }
    }

    /// Sets a tag on a group, as its owners would.
    pub async fn tag_group(&self, name: &str, key: &str, value: &str) {
        let tag = asg::types::Tag::builder()
            .resource_id(name)
            .resource_type("auto-scaling-group")
            .key(key)
            .value(value)
            .propagate_at_launch(false)
            .build();
        self.asg.create_or_update_tags().tags(tag).send().await.expect("tag group");
    }

    /// A group's tags.
    pub async fn group_tags(&self, name: &str) -> BTreeMap<String, String> {
        let out = self.asg.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await.expect("group");
        out.auto_scaling_groups()
            .iter()
            .flat_map(|g| g.tags())
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect()
    }

    /// Messages a queue holds in any state (visible, in flight, delayed).
    pub async fn depth(&self, queue: &str) -> u64 {
        use sqs::types::QueueAttributeName as A;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(A::All)
            .send()
            .await
            .expect("queue attributes");
        let attrs = out.attributes().cloned().unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
            A::ApproximateNumberOfMessagesDelayed,
        ]
        .iter()
        .map(|a| attrs.get(a).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
        .sum()
    }

    /// Takes everything from a dead-letter queue, returning the bodies.
    pub async fn drain_dlq(&self, queue: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let out =
                self.sqs.receive_message().queue_url(queue).max_number_of_messages(10).send().await.expect("receive");
            if out.messages().is_empty() {
                return bodies;
            }
            for m in out.messages() {
                bodies.push(m.body().unwrap_or_default().to_string());
                self.sqs
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }

    pub async fn send(&self, queue: &str, body: &str, dedup: Option<&str>) {
        let mut req = self.sqs.send_message().queue_url(queue).message_body(body);
        if let Some(d) = dedup {
            req = req.message_group_id(d).message_deduplication_id(d);
        }
        req.send().await.expect("send");
    }
}

/// The before/after table of `make demo`.
pub fn table(groups: &[GroupView]) -> String {
    let mut out = String::new();
    for g in groups {
        let _ = writeln!(out, "  {:<14} desired/min/max {}/{}/{}", g.name, g.desired, g.min, g.max);
        for m in &g.members {
            let _ =
                writeln!(out, "      {:<21} {:<10} {}", m.id, if m.spot { "spot" } else { "on-demand" }, m.lifecycle);
        }
    }
    out
}
