//! Conversions from the SDK's types to the crate's own, and from SDK errors to [`AwsError`].

use aws_sdk_autoscaling as asg;
use aws_sdk_ec2 as ec2;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::domain::model::{Group, Instance, InstanceState, LaunchSource, Lifecycle, Member, TemplateVersion};
use crate::domain::pools::TypeInfo;
use crate::domain::reserved::{platform_of_product, Reservation};
use crate::error::AwsError;

pub(super) fn err<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus,
{
    move |e| match &e {
        SdkError::ServiceError(se) => AwsError::new(
            operation,
            se.err().code().map(str::to_owned),
            // An answer without a message (an emulator's bare 500) still says something.
            Some(se.err().message().map_or_else(|| format!("HTTP {}", se.raw().status()), str::to_owned)),
            se.raw().status() >= 500,
        ),
        SdkError::ConstructionFailure(_) => {
            AwsError { transient: false, ..AwsError::unanswered(operation, DisplayErrorContext(&e).to_string()) }
        }
        _ => AwsError::unanswered(operation, DisplayErrorContext(&e).to_string()),
    }
}

/// The HTTP status of a raw response, so that a 5xx without a known code is still transient.
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

pub(super) fn ec2_filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> ec2::types::Filter {
    ec2::types::Filter::builder().name(name).set_values(Some(values.into_iter().map(Into::into).collect())).build()
}

pub(super) fn to_epoch(t: Option<&aws_smithy_types::DateTime>) -> i64 {
    t.map(|t| t.secs()).unwrap_or_default()
}

pub(super) fn to_group(g: &asg::types::AutoScalingGroup) -> Group {
    let launch = if g.mixed_instances_policy().is_some() {
        LaunchSource::MixedInstances
    } else if let Some(lt) = g.launch_template() {
        LaunchSource::Template {
            id: lt.launch_template_id().unwrap_or_default().to_string(),
            version: lt.version().unwrap_or("$Default").to_string(),
        }
    } else if g.launch_configuration_name().is_some() {
        LaunchSource::Configuration
    } else {
        LaunchSource::None
    };
    Group {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        min: g.min_size().unwrap_or_default(),
        max: g.max_size().unwrap_or_default(),
        desired: g.desired_capacity().unwrap_or_default(),
        tags: g
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect(),
        members: g
            .instances()
            .iter()
            .map(|i| Member {
                id: i.instance_id().unwrap_or_default().to_string(),
                lifecycle: i.lifecycle_state().map(|l| Lifecycle::parse(l.as_str())).unwrap_or_default(),
                healthy: i.health_status().is_some_and(|h| h.eq_ignore_ascii_case("healthy")),
                protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
            })
            .collect(),
        launch,
        suspended: g.suspended_processes().iter().filter_map(|p| p.process_name().map(str::to_string)).collect(),
        target_groups: g.target_group_arns().to_vec(),
        load_balancers: g.load_balancer_names().to_vec(),
    }
}

pub(super) fn to_instance(i: &ec2::types::Instance) -> Instance {
    Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        state: i.state().and_then(|s| s.name()).map_or(InstanceState::Unknown, |n| InstanceState::parse(n.as_str())),
        spot: i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
        instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        subnet_id: i.subnet_id().map(str::to_string),
        availability_zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_string),
        launch_time: to_epoch(i.launch_time()),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect(),
        image_id: i.image_id().map(str::to_string),
        platform: i.platform_details().filter(|p| !p.is_empty()).unwrap_or("Linux/UNIX").to_string(),
        tenancy: i.placement().and_then(|p| p.tenancy()).map_or("default", |t| t.as_str()).to_string(),
        state_reason: i.state_reason().and_then(|r| r.code()).map(str::to_string),
    }
}

pub(super) fn to_template_version(v: &ec2::types::LaunchTemplateVersion) -> TemplateVersion {
    let data = v.launch_template_data();
    TemplateVersion {
        template_id: v.launch_template_id().unwrap_or_default().to_string(),
        number: v.version_number().unwrap_or_default(),
        image_id: data.and_then(|d| d.image_id()).map(str::to_string),
        instance_type: data.and_then(|d| d.instance_type()).map(|t| t.as_str().to_string()),
    }
}

/// The version `version` (a number, `$Latest` or `$Default`) of template `id` among `found`.
/// `$Latest` is the highest number listed, which holds for both forms of the call: every version
/// they return is at most the latest.
pub(super) fn resolve<'a>(
    found: &'a [ec2::types::LaunchTemplateVersion],
    id: &str,
    version: &str,
) -> Option<&'a ec2::types::LaunchTemplateVersion> {
    let mut of_template = found.iter().filter(|v| v.launch_template_id() == Some(id));
    match version {
        "$Latest" => of_template.max_by_key(|v| v.version_number()),
        "$Default" => of_template.find(|v| v.default_version() == Some(true)),
        n => of_template.find(|v| v.version_number().map(|x| x.to_string()).as_deref() == Some(n)),
    }
}

/// Only active reservations count; a zonal one names its zone, a regional one does not.
pub(crate) fn to_reservation(r: &ec2::types::ReservedInstances) -> Option<Reservation> {
    if r.state().map(|s| s.as_str()) != Some("active") {
        return None;
    }
    let zonal = r.scope().is_some_and(|s| s.as_str() == "Availability Zone");
    Some(Reservation {
        instance_type: r.instance_type()?.as_str().to_string(),
        availability_zone: if zonal { r.availability_zone().map(str::to_string) } else { None },
        count: r.instance_count().unwrap_or_default().max(0) as u32,
        platform: platform_of_product(r.product_description().map_or("Linux/UNIX", |p| p.as_str())),
        tenancy: r.instance_tenancy().map_or("default", |t| t.as_str()).to_string(),
    })
}

pub(super) fn to_type_info(t: &ec2::types::InstanceTypeInfo) -> TypeInfo {
    TypeInfo {
        name: t.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        architectures: t
            .processor_info()
            .map(|p| p.supported_architectures().iter().map(|a| a.as_str().to_string()).collect())
            .unwrap_or_default(),
        vcpus: t.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or_default(),
        memory_mib: t.memory_info().and_then(|m| m.size_in_mib()).unwrap_or_default(),
        spot: t.supported_usage_classes().iter().any(|c| c.as_str() == "spot"),
        burstable: t.burstable_performance_supported().unwrap_or(false),
        instance_storage: t.instance_storage_supported().unwrap_or(false),
        current_generation: t.current_generation().unwrap_or(false),
        bare_metal: t.bare_metal().unwrap_or(false),
        hypervisor: t.hypervisor().map(|h| h.as_str().to_string()).unwrap_or_default(),
        boot_modes: t.supported_boot_modes().iter().map(|m| m.as_str().to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec2::types::{ReservedInstanceState, ReservedInstances, RiProductDescription, Scope, Tenancy};

    fn reservation(scope: Scope, state: ReservedInstanceState) -> ReservedInstances {
        ReservedInstances::builder()
            .instance_type(ec2::types::InstanceType::M5Xlarge)
            .availability_zone("eu-west-1a")
            .scope(scope)
            .instance_count(3)
            .state(state)
            .product_description(RiProductDescription::LinuxUnixAmazonVpc)
            .instance_tenancy(Tenancy::Default)
            .build()
    }

    #[test]
    fn reservations_read_from_the_sdk_keep_only_what_coverage_needs() {
        let zonal = to_reservation(&reservation(Scope::AvailabilityZone, ReservedInstanceState::Active)).unwrap();
        assert_eq!(
            zonal,
            Reservation {
                instance_type: "m5.xlarge".into(),
                availability_zone: Some("eu-west-1a".into()),
                count: 3,
                platform: "Linux/UNIX".into(),
                tenancy: "default".into(),
            }
        );
        // A regional reservation reports a zone too (where it was bought): not a zonal one.
        let regional = to_reservation(&reservation(Scope::Regional, ReservedInstanceState::Active)).unwrap();
        assert_eq!(regional.availability_zone, None);
        assert_eq!(to_reservation(&reservation(Scope::Regional, ReservedInstanceState::Retired)), None);
        assert_eq!(to_reservation(&reservation(Scope::Regional, ReservedInstanceState::PaymentPending)), None);
    }
}
