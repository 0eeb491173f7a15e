//! The SDK adapter behind [`Cloud`]: pagination, batching, error-code mapping and call counting
//! live here and nowhere else. The client and its calls are here; conversions from the SDK's
//! types in [`convert`], the call counter in [`calls`], the Price List lookup in [`price_list`].

mod calls;
mod convert;
mod price_list;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_autoscaling as asg;
use aws_sdk_ec2 as ec2;
use aws_sdk_elasticloadbalancing as elb;
use aws_sdk_elasticloadbalancingv2 as elbv2;
use aws_sdk_pricing as pricing;
use aws_sdk_sqs as sqs;

pub use calls::ApiCalls;
use convert::{ec2_filter, err, resolve, to_group, to_instance, to_reservation, to_template_version, to_type_info};
use price_list::{PriceCache, PRICE_TTL};

use crate::cloud::{Cloud, GroupQuery, InstanceQuery, Outgoing, Result, TypeQuery};
use crate::domain::model::{
    is_capacity_error, launch_failure, Activity, Group, Health, Hook, Instance, InstanceState, Launch, LaunchResult,
    Market, Tags, TemplateVersion, TAG_AWS_GROUP,
};
use crate::domain::pools::TypeInfo;
use crate::domain::reserved::Reservation;
use crate::error::AwsError;

/// DescribeInstanceTypes answers per query, with when they were read.
type TypesCache = Arc<Mutex<BTreeMap<String, (Vec<TypeInfo>, Instant)>>>;

/// The real thing: EC2, Auto Scaling, SQS and Price List clients built once per cold start.
#[derive(Debug, Clone)]
pub struct AwsCloud {
    ec2: ec2::Client,
    asg: asg::Client,
    elbv2: elbv2::Client,
    elb: elb::Client,
    sqs: sqs::Client,
    pricing: pricing::Client,
    region: String,
    on_demand_cache: PriceCache,
    /// DescribeInstanceTypes answers per query, kept for [`PRICE_TTL`] too: the catalog changes
    /// when AWS launches a type.
    types_cache: TypesCache,
}

impl AwsCloud {
    /// Region, credentials and endpoints from the standard environment (`AWS_REGION`,
    /// `AWS_ENDPOINT_URL*`, the Lambda role); retries with backoff on throttling and 5xx.
    pub async fn from_env(calls: ApiCalls) -> Self {
        Self::new(&Self::loader().load().await, calls)
    }

    /// The standard configuration chain with the retries and timeouts every caller of AWS here
    /// uses (the functions, and the command line, which adds a profile and a Region to it).
    pub fn loader() -> aws_config::ConfigLoader {
        aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                TimeoutConfig::builder()
                    // A page of 1,000 instances can be slow to come; a hung connection must
                    // not eat the function's whole timeout either.
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            )
    }

    pub fn new(config: &SdkConfig, calls: ApiCalls) -> Self {
        Self {
            ec2: ec2::Client::from_conf(ec2::config::Builder::from(config).interceptor(calls.clone()).build()),
            asg: asg::Client::from_conf(asg::config::Builder::from(config).interceptor(calls.clone()).build()),
            elbv2: elbv2::Client::from_conf(elbv2::config::Builder::from(config).interceptor(calls.clone()).build()),
            elb: elb::Client::from_conf(elb::config::Builder::from(config).interceptor(calls.clone()).build()),
            sqs: sqs::Client::from_conf(sqs::config::Builder::from(config).interceptor(calls.clone()).build()),
            // The Price List API answers in us-east-1 (and two other Regions) whatever ours is.
            pricing: pricing::Client::from_conf(
                pricing::config::Builder::from(config)
                    .region(aws_config::Region::new("us-east-1"))
                    .interceptor(calls)
                    .build(),
            ),
            region: config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into()),
            on_demand_cache: Arc::default(),
            types_cache: Arc::default(),
        }
    }
}

/// Filter values per DescribeInstances / DescribeAutoScalingGroups call.
const FILTER_VALUES: usize = 100;

impl Cloud for AwsCloud {
    async fn groups(&self, query: &GroupQuery) -> Result<Vec<Group>> {
        let filter = |name: String, value: &str| asg::types::Filter::builder().name(name).values(value).build();
        let requests = match query {
            GroupQuery::Tagged { key, value } => {
                vec![self.asg.describe_auto_scaling_groups().filters(filter(format!("tag:{key}"), value))]
            }
            GroupQuery::HavingAnyTag { keys } => {
                let any = asg::types::Filter::builder().name("tag-key").set_values(Some(keys.clone())).build();
                vec![self.asg.describe_auto_scaling_groups().filters(any)]
            }
            GroupQuery::Named(names) => names
                .chunks(FILTER_VALUES)
                .map(|chunk| self.asg.describe_auto_scaling_groups().set_auto_scaling_group_names(Some(chunk.to_vec())))
                .collect(),
            GroupQuery::All => vec![self.asg.describe_auto_scaling_groups()],
        };
        let mut groups = Vec::new();
        for request in requests {
            let mut pages = request.max_records(100).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(err("autoscaling:DescribeAutoScalingGroups"))?;
                groups.extend(page.auto_scaling_groups().iter().map(to_group));
            }
        }
        Ok(groups)
    }

    async fn instances(&self, query: &InstanceQuery, states: &[InstanceState]) -> Result<Vec<Instance>> {
        let selectors: Vec<ec2::types::Filter> = match query {
            InstanceQuery::InGroups(names) => names
                .chunks(FILTER_VALUES)
                .map(|c| ec2_filter(&format!("tag:{TAG_AWS_GROUP}"), c.iter().cloned()))
                .collect(),
            InstanceQuery::Tagged { key, value: None } => vec![ec2_filter("tag-key", [key.clone()])],
            InstanceQuery::Tagged { key, value: Some(v) } => vec![ec2_filter(&format!("tag:{key}"), [v.clone()])],
            InstanceQuery::Ids(ids) => {
                ids.chunks(FILTER_VALUES).map(|c| ec2_filter("instance-id", c.iter().cloned())).collect()
            }
            InstanceQuery::Types(types) => {
                types.chunks(FILTER_VALUES).map(|c| ec2_filter("instance-type", c.iter().cloned())).collect()
            }
        };
        let mut out = Vec::new();
        for selector in selectors {
            let mut pages = self
                .ec2
                .describe_instances()
                .filters(selector)
                .filters(ec2_filter("instance-state-name", states.iter().map(InstanceState::as_str)))
                .max_results(1000)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(err("ec2:DescribeInstances"))?;
                out.extend(page.reservations().iter().flat_map(|r| r.instances()).map(to_instance));
            }
        }
        Ok(out)
    }

    async fn health(&self, ids: &[String]) -> Result<BTreeMap<String, Health>> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(100) {
            let page = self
                .ec2
                .describe_instance_status()
                .set_instance_ids(Some(chunk.to_vec()))
                .include_all_instances(true)
                .send()
                .await
                .map_err(err("ec2:DescribeInstanceStatus"))?;
            for s in page.instance_statuses() {
                let status = |summary: Option<&ec2::types::InstanceStatusSummary>| {
                    summary.and_then(|s| s.status()).map(|s| s.as_str().to_string()).unwrap_or_default()
                };
                let health = Health {
                    state: s
                        .instance_state()
                        .and_then(|st| st.name())
                        .map_or(InstanceState::Unknown, |n| InstanceState::parse(n.as_str())),
                    system: status(s.system_status()),
                    instance: status(s.instance_status()),
                    ebs: s.attached_ebs_status().and_then(|e| e.status()).map(|st| st.as_str().to_string()),
                };
                out.insert(s.instance_id().unwrap_or_default().to_string(), health);
            }
        }
        Ok(out)
    }

    async fn group_of(&self, ids: &[String]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(50) {
            let page = self
                .asg
                .describe_auto_scaling_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .max_records(50)
                .send()
                .await
                .map_err(err("autoscaling:DescribeAutoScalingInstances"))?;
            for i in page.auto_scaling_instances() {
                if let (Some(id), Some(group)) = (i.instance_id(), i.auto_scaling_group_name()) {
                    out.insert(id.to_string(), group.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn spot_prices(&self, types: &[String]) -> Result<BTreeMap<(String, String), f64>> {
        let mut out = BTreeMap::new();
        if types.is_empty() {
            return Ok(out);
        }
        let mut pages = self
            .ec2
            .describe_spot_price_history()
            .set_instance_types(Some(types.iter().map(|t| ec2::types::InstanceType::from(t.as_str())).collect()))
            .product_descriptions("Linux/UNIX")
            .start_time(aws_smithy_types::DateTime::from(std::time::SystemTime::now()))
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for p in page.map_err(err("ec2:DescribeSpotPriceHistory"))?.spot_price_history() {
                let (Some(t), Some(az), Some(price)) = (p.instance_type(), p.availability_zone(), p.spot_price())
                else {
                    continue;
                };
                if let Ok(price) = price.parse::<f64>() {
                    // Newest first: keep the first price seen for each pool.
                    out.entry((t.as_str().to_string(), az.to_string())).or_insert(price);
                }
            }
        }
        Ok(out)
    }

    async fn on_demand_prices(&self, types: &[String]) -> Result<BTreeMap<String, f64>> {
        price_list::on_demand_prices(&self.pricing, &self.region, &self.on_demand_cache, types).await
    }

    async fn termination_protected(&self, id: &str) -> Result<bool> {
        let out = self
            .ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(ec2::types::InstanceAttributeName::DisableApiTermination)
            .send()
            .await
            .map_err(err("ec2:DescribeInstanceAttribute"))?;
        Ok(out.disable_api_termination().and_then(|v| v.value()).unwrap_or(false))
    }

    async fn instance_types(&self, query: &TypeQuery) -> Result<Vec<TypeInfo>> {
        let key = format!("{query:?}");
        let cached = self.types_cache.lock().ok().and_then(|c| c.get(&key).cloned());
        if let Some((types, _)) = cached.filter(|(_, at)| at.elapsed() < PRICE_TTL) {
            return Ok(types);
        }
        let request = match query {
            TypeQuery::Named(names) => self
                .ec2
                .describe_instance_types()
                .set_instance_types(Some(names.iter().map(|n| ec2::types::InstanceType::from(n.as_str())).collect())),
            TypeQuery::SpotCapable { architecture, vcpus } => {
                let mut filters = vec![
                    ec2_filter("processor-info.supported-architecture", [architecture.clone()]),
                    ec2_filter("supported-usage-class", ["spot"]),
                ];
                // EC2 takes up to 200 values per filter; past that, the range is applied below.
                if vcpus.clone().count() <= 200 {
                    filters.push(ec2_filter("vcpu-info.default-vcpus", vcpus.clone().map(|v| v.to_string())));
                }
                self.ec2.describe_instance_types().set_filters(Some(filters))
            }
        };
        let mut types = Vec::new();
        let mut pages = request.max_results(100).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(err("ec2:DescribeInstanceTypes"))?;
            types.extend(page.instance_types().iter().map(to_type_info));
        }
        if let TypeQuery::SpotCapable { vcpus, .. } = query {
            types.retain(|t| vcpus.contains(&t.vcpus));
        }
        if let Ok(mut cache) = self.types_cache.lock() {
            cache.insert(key, (types.clone(), Instant::now()));
        }
        Ok(types)
    }

    async fn template_versions(
        &self,
        wanted: &[(String, String)],
    ) -> Result<BTreeMap<(String, String), TemplateVersion>> {
        let mut by_template: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, version) in wanted {
            by_template.entry(id).or_default().push(version);
        }
        let mut found: Vec<ec2::types::LaunchTemplateVersion> = Vec::new();
        if by_template.values().filter(|vs| vs.iter().any(|v| v.starts_with('$'))).count() > 1 {
            // One paginated call describes `$Latest` and `$Default` of every template in the
            // account, instead of one call per template. If it fails (another template of the
            // account may be what it trips on), the calls per template below still answer.
            let mut pages = self
                .ec2
                .describe_launch_template_versions()
                .versions("$Latest")
                .versions("$Default")
                .resolve_alias(true)
                .max_results(200)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                match page.map_err(err("ec2:DescribeLaunchTemplateVersions")) {
                    Ok(page) => found.extend(page.launch_template_versions().iter().cloned()),
                    Err(e) => {
                        tracing::warn!(code = e.code(), error = %e, "could not describe every template at once; one call per template");
                        found.clear();
                        break;
                    }
                }
            }
        }
        for (id, versions) in &by_template {
            let missing: Vec<String> =
                versions.iter().filter(|v| resolve(&found, id, v).is_none()).map(|v| v.to_string()).collect();
            if missing.is_empty() {
                continue;
            }
            let answer = self
                .ec2
                .describe_launch_template_versions()
                .launch_template_id(*id)
                .set_versions(Some(missing))
                .resolve_alias(true)
                .send()
                .await
                .map_err(err("ec2:DescribeLaunchTemplateVersions"));
            match answer {
                Ok(page) => found.extend(page.launch_template_versions().iter().cloned()),
                // A template or version deleted under the group: the caller sees it missing.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(wanted
            .iter()
            .filter_map(|(id, v)| Some(((id.clone(), v.clone()), to_template_version(resolve(&found, id, v)?))))
            .collect())
    }

    async fn reserved_instances(&self) -> Result<Vec<Reservation>> {
        let out = self
            .ec2
            .describe_reserved_instances()
            .filters(ec2_filter("state", ["active"]))
            .customize()
            // A scan goes on without reservations when this fails, and the next one asks again:
            // retrying for long here would only delay every other decision.
            .config_override(ec2::config::Builder::default().retry_config(RetryConfig::standard().with_max_attempts(2)))
            .send()
            .await
            .map_err(err("ec2:DescribeReservedInstances"))?;
        Ok(out.reserved_instances().iter().filter_map(to_reservation).collect())
    }

    async fn interruption_notice(&self, id: &str) -> Result<bool> {
        let out = self
            .ec2
            .describe_spot_instance_requests()
            .filters(ec2_filter("instance-id", [id]))
            .send()
            .await
            .map_err(err("ec2:DescribeSpotInstanceRequests"))?;
        Ok(out
            .spot_instance_requests()
            .iter()
            .filter_map(|r| r.status()?.code())
            .any(|code| code.starts_with("marked-for-")))
    }

    async fn lifecycle_hooks(&self, group: &str) -> Result<Vec<Hook>> {
        let out = self
            .asg
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map_err(err("autoscaling:DescribeLifecycleHooks"))?;
        Ok(out
            .lifecycle_hooks()
            .iter()
            .filter_map(|h| match h.lifecycle_transition()? {
                "autoscaling:EC2_INSTANCE_LAUNCHING" => Some(Hook::Launching),
                "autoscaling:EC2_INSTANCE_TERMINATING" => Some(Hook::Terminating),
                _ => None,
            })
            .collect())
    }

    async fn scaling_activities(&self, group: &str) -> Result<Vec<Activity>> {
        let out = self
            .asg
            .describe_scaling_activities()
            .auto_scaling_group_name(group)
            .max_records(100)
            .send()
            .await
            .map_err(err("autoscaling:DescribeScalingActivities"))?;
        Ok(out
            .activities()
            .iter()
            .map(|a| Activity {
                description: a.description().unwrap_or_default().to_string(),
                cause: a.cause().unwrap_or_default().to_string(),
            })
            .collect())
    }

    async fn target_health(&self, target_group: &str, ids: &[String]) -> Result<BTreeMap<String, String>> {
        let targets = ids.iter().map(|id| elbv2::types::TargetDescription::builder().id(id).build()).collect();
        let out = self
            .elbv2
            .describe_target_health()
            .target_group_arn(target_group)
            .set_targets(Some(targets))
            .send()
            .await
            .map_err(err("elasticloadbalancing:DescribeTargetHealth"))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let id = d.target()?.id()?.to_string();
                Some((id, d.target_health()?.state()?.as_str().to_string()))
            })
            .collect())
    }

    async fn load_balancer_health(&self, load_balancer: &str, ids: &[String]) -> Result<BTreeMap<String, String>> {
        let instances = ids.iter().map(|id| elb::types::Instance::builder().instance_id(id).build()).collect();
        let out = self
            .elb
            .describe_instance_health()
            .load_balancer_name(load_balancer)
            .set_instances(Some(instances))
            .send()
            .await
            .map_err(err("elasticloadbalancing:DescribeInstanceHealth"))?;
        Ok(out
            .instance_states()
            .iter()
            .filter_map(|s| Some((s.instance_id()?.to_string(), s.state()?.to_string())))
            .collect())
    }

    async fn launch(&self, launch: &Launch) -> Result<LaunchResult> {
        use ec2::types::*;
        let tags = launch.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let overrides = launch
            .instance_types
            .iter()
            .map(|t| {
                FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(InstanceType::from(t.as_str()))
                    .subnet_id(&launch.subnet_id)
                    .build()
            })
            .collect();
        let market = match launch.market {
            Market::Spot => DefaultTargetCapacityType::Spot,
            Market::OnDemand => DefaultTargetCapacityType::OnDemand,
        };
        let mut request = self
            .ec2
            .create_fleet()
            .r#type(FleetType::Instant)
            .client_token(&launch.client_token)
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(1)
                    .default_target_capacity_type(market)
                    .build(),
            )
            .launch_template_configs(
                FleetLaunchTemplateConfigRequest::builder()
                    .launch_template_specification(
                        FleetLaunchTemplateSpecificationRequest::builder()
                            .launch_template_id(&launch.template_id)
                            .version(&launch.template_version)
                            .build(),
                    )
                    .set_overrides(Some(overrides))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags)).build(),
            );
        if launch.market == Market::Spot {
            request = request.spot_options(
                SpotOptionsRequest::builder()
                    .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                    .build(),
            );
        }
        let out = match request.send().await {
            Ok(out) => out,
            Err(e) => {
                let e = err("ec2:CreateFleet")(e);
                // The token was used by a launch with other parameters (a pool backed off or a
                // tag changed between two deliveries): that launch's copy is found by its tags
                // when the message comes back.
                if e.transient || e.code() == "IdempotentParameterMismatch" {
                    return Err(e);
                }
                return Ok(launch_failure(e.code(), e.message.as_deref().unwrap_or_default()));
            }
        };
        // Errors[] names the pools that had nothing, with or without an instance elsewhere.
        let empty_pools: Vec<String> = out
            .errors()
            .iter()
            .filter(|e| e.error_code().is_some_and(is_capacity_error))
            .filter_map(|e| e.launch_template_and_overrides()?.overrides()?.instance_type())
            .map(|t| t.as_str().to_string())
            .collect();
        // HTTP 200 can carry no instance and only errors.
        if let Some((id, t)) = out
            .instances()
            .iter()
            .find_map(|i| Some((i.instance_ids().first()?.clone(), i.instance_type().map(|t| t.as_str().to_string()))))
        {
            let instance_type = t.or_else(|| launch.instance_types.first().cloned()).unwrap_or_default();
            return Ok(LaunchResult::Launched { instance_id: id, instance_type, empty_pools });
        }
        let first = out.errors().first();
        Ok(launch_failure(
            first.and_then(|e| e.error_code()).unwrap_or("NoInstanceLaunched"),
            first.and_then(|e| e.error_message()).unwrap_or("CreateFleet returned no instance and no error"),
        ))
    }

    async fn tag_instances(&self, ids: &[String], tags: &Tags) -> Result<()> {
        let tags: Vec<ec2::types::Tag> =
            tags.iter().map(|(k, v)| ec2::types::Tag::builder().key(k).value(v).build()).collect();
        for chunk in ids.chunks(500) {
            self.ec2
                .create_tags()
                .set_resources(Some(chunk.to_vec()))
                .set_tags(Some(tags.clone()))
                .send()
                .await
                .map_err(err("ec2:CreateTags"))?;
        }
        Ok(())
    }

    async fn terminate(&self, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(100) {
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(err("ec2:TerminateInstances"))?;
        }
        Ok(())
    }

    async fn attach(&self, group: &str, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(20) {
            self.asg
                .attach_instances()
                .auto_scaling_group_name(group)
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(err("autoscaling:AttachInstances"))?;
        }
        Ok(())
    }

    async fn terminate_in_group(&self, id: &str, decrement_desired: bool) -> Result<()> {
        self.asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id)
            .should_decrement_desired_capacity(decrement_desired)
            .send()
            .await
            .map_err(err("autoscaling:TerminateInstanceInAutoScalingGroup"))?;
        Ok(())
    }

    async fn detach(&self, group: &str, id: &str, decrement_desired: bool) -> Result<()> {
        self.asg
            .detach_instances()
            .auto_scaling_group_name(group)
            .instance_ids(id)
            .should_decrement_desired_capacity(decrement_desired)
            .send()
            .await
            .map_err(err("autoscaling:DetachInstances"))?;
        Ok(())
    }

    async fn set_desired(&self, group: &str, desired: i32) -> Result<()> {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(desired)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(err("autoscaling:SetDesiredCapacity"))?;
        Ok(())
    }

    async fn set_max_size(&self, group: &str, max: i32) -> Result<()> {
        self.asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .max_size(max)
            .send()
            .await
            .map_err(err("autoscaling:UpdateAutoScalingGroup"))?;
        Ok(())
    }

    async fn tag_group(&self, group: &str, tags: &Tags) -> Result<()> {
        let tags = tags
            .iter()
            .map(|(key, value)| {
                asg::types::Tag::builder()
                    .resource_id(group)
                    .resource_type("auto-scaling-group")
                    .key(key)
                    .value(value)
                    .propagate_at_launch(false)
                    .build()
            })
            .collect();
        self.asg
            .create_or_update_tags()
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(err("autoscaling:CreateOrUpdateTags"))?;
        Ok(())
    }

    async fn untag_group(&self, group: &str, keys: &[String]) -> Result<()> {
        let tags = keys
            .iter()
            .map(|key| {
                asg::types::Tag::builder().resource_id(group).resource_type("auto-scaling-group").key(key).build()
            })
            .collect();
        self.asg.delete_tags().set_tags(Some(tags)).send().await.map_err(err("autoscaling:DeleteTags"))?;
        Ok(())
    }

    async fn send(&self, queue_url: &str, messages: Vec<Outgoing>) -> Result<usize> {
        let mut failed = 0;
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(n, m)| {
                    sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(n.to_string())
                        .message_body(&m.body)
                        .set_delay_seconds((m.delay_seconds > 0).then_some(m.delay_seconds))
                        .set_message_group_id(m.group_id.clone())
                        .set_message_deduplication_id(m.dedup_id.clone())
                        .build()
                        .map_err(|e| AwsError {
                            transient: false,
                            ..AwsError::unanswered("sqs:SendMessageBatch", e.to_string())
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(err("sqs:SendMessageBatch"))?;
            for f in out.failed() {
                tracing::error!(queue = %queue_url, code = %f.code(), reason = f.message().unwrap_or_default(), "message not sent");
            }
            failed += out.failed().len();
        }
        Ok(failed)
    }
}
