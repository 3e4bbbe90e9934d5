//! The gRPC service ultronctl calls: an adapter that decodes each request,
//! calls one hive operation ([`crate::ops`]) as the operator the caller
//! layer admitted ([`crate::caller`]), and encodes the result. A job,
//! execution or event id in a request may be a unique prefix of one: it is
//! resolved first ([`Hive::resolve_id`]), the same way for every call.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use ultron8_core::health::UnknownCheckState;
use ultron8_core::ids::DroneId;
use ultron8_proto::v1::{self, control_service_server::ControlService};

use crate::caller::operator;
use crate::error::{ErrorDetail, HiveError};
use crate::hive::Hive;
use crate::rpc;

pub struct ControlApi {
    pub hive: Arc<Hive>,
}

type ExecutionStream = Pin<Box<dyn Stream<Item = Result<v1::Execution, Status>> + Send>>;
type JobEventStream = Pin<Box<dyn Stream<Item = Result<v1::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn create_join_token(
        &self,
        request: Request<v1::CreateJoinTokenRequest>,
    ) -> Result<Response<v1::CreateJoinTokenResponse>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        let ttl = rpc::join_token_ttl(&request);
        let binding = rpc::join_token_binding(&request)?;
        let labels = request.labels.into_iter().collect();
        let issued = self
            .hive
            .create_join_token(&actor, labels, ttl, binding)
            .await?;
        Ok(Response::new(rpc::join_token_to_wire(issued)))
    }

    async fn list_drones(
        &self,
        request: Request<v1::ListDronesRequest>,
    ) -> Result<Response<v1::ListDronesResponse>, Status> {
        let drones = self.hive.list_drones(&request.into_inner().target).await?;
        Ok(Response::new(v1::ListDronesResponse {
            drones: drones.iter().map(rpc::drone_to_wire).collect(),
        }))
    }

    async fn get_drone(
        &self,
        request: Request<v1::GetDroneRequest>,
    ) -> Result<Response<v1::Drone>, Status> {
        let id = DroneId::from(request.into_inner().id);
        let drone = self.hive.fleet_drone(&id).await?;
        Ok(Response::new(rpc::drone_to_wire(&drone)))
    }

    async fn remove_drone(
        &self,
        request: Request<v1::RemoveDroneRequest>,
    ) -> Result<Response<v1::Drone>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        let drone = self
            .hive
            .remove_drone(&actor, &DroneId::from(request.id), request.force)
            .await?;
        Ok(Response::new(rpc::drone_to_wire(&drone)))
    }

    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let actor = operator(&request)?;
        let spec = rpc::job_spec_from_submit(request.into_inner())?;
        let submitted = self.hive.submit(&actor, spec).await?;
        Ok(Response::new(rpc::job_to_wire(
            &submitted.job,
            &submitted.offline_drones,
        )))
    }

    type WatchJobStream = ExecutionStream;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job_id = self
            .hive
            .resolve_job_id(&request.into_inner().job_id)
            .await?;
        let executions = self.hive.watch_job(&job_id).await?;
        let executions = executions.map(|item| {
            item.map(|execution| rpc::execution_to_wire(&execution))
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(executions)))
    }

    type FollowJobStream = JobEventStream;

    async fn follow_job(
        &self,
        request: Request<v1::FollowJobRequest>,
    ) -> Result<Response<Self::FollowJobStream>, Status> {
        let certificate = ultron8_transport::caller_certificate(request.extensions());
        let request = request.into_inner();
        let drone = Some(request.drone_id)
            .filter(|d| !d.is_empty())
            .map(DroneId::from);
        let job_id = self.hive.resolve_job_id(&request.job_id).await?;
        let events = self.hive.follow_job(&job_id, drone, request.follow).await?;
        let events = events
            .map(|item| {
                item.map(|event| rpc::job_event_to_wire(&event))
                    .map_err(Status::from)
            })
            .boxed();
        Ok(Response::new(crate::caller::until_revoked(
            self.hive.clone(),
            certificate,
            events,
        )))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        let drone = Some(request.drone_id)
            .filter(|d| !d.is_empty())
            .map(DroneId::from);
        let job_id = self.hive.resolve_job_id(&request.job_id).await?;
        let canceled = self
            .hive
            .cancel_job(&actor, &job_id, drone.as_ref())
            .await?;
        Ok(Response::new(rpc::canceled_to_wire(canceled)))
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let id = self.hive.resolve_job_id(&request.into_inner().id).await?;
        let job = self.hive.get_job(&id).await?;
        let offline = self.hive.offline_when_submitted(&job.id).await?;
        Ok(Response::new(rpc::job_to_wire(&job, &offline)))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let filter = rpc::job_filter(request.into_inner())?;
        let jobs = self.hive.list_jobs(&filter).await?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: jobs.into_iter().map(rpc::job_summary_to_wire).collect(),
        }))
    }

    async fn get_execution(
        &self,
        request: Request<v1::GetExecutionRequest>,
    ) -> Result<Response<v1::Execution>, Status> {
        let id = self
            .hive
            .resolve_execution_id(&request.into_inner().id)
            .await?;
        let execution = self.hive.get_execution(&id).await?;
        Ok(Response::new(rpc::execution_to_wire(&execution)))
    }

    /// A pack refused for its content answers with its problems in the
    /// response, when the client asks for that (see
    /// `InstallPackRequest.problems_in_response`): the list can be far
    /// longer than a status message may be.
    async fn install_pack(
        &self,
        request: Request<v1::InstallPackRequest>,
    ) -> Result<Response<v1::InstallPackResponse>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        match self.hive.install_pack(&actor, &request.tarball).await {
            Ok((view, previous)) => Ok(Response::new(v1::InstallPackResponse {
                pack: Some(rpc::pack_info(view)?),
                previous_version: previous.unwrap_or_default(),
                refusal: None,
            })),
            Err(error) if request.problems_in_response => match error.detail() {
                Some(ErrorDetail::PackProblems { problems }) => {
                    Ok(Response::new(v1::InstallPackResponse {
                        pack: None,
                        previous_version: String::new(),
                        refusal: Some(v1::PackRefusal {
                            message: error.message().to_string(),
                            problems: problems.clone(),
                        }),
                    }))
                }
                _ => Err(error.into()),
            },
            Err(error) => Err(error.into()),
        }
    }

    async fn list_packs(
        &self,
        _request: Request<v1::ListPacksRequest>,
    ) -> Result<Response<v1::ListPacksResponse>, Status> {
        let packs = self.hive.list_packs().await?;
        Ok(Response::new(v1::ListPacksResponse {
            packs: packs
                .into_iter()
                .map(rpc::pack_info)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn get_pack(
        &self,
        request: Request<v1::GetPackRequest>,
    ) -> Result<Response<v1::PackInfo>, Status> {
        let pack = self.hive.get_pack(&request.into_inner().name).await?;
        Ok(Response::new(rpc::pack_info(pack)?))
    }

    async fn remove_pack(
        &self,
        request: Request<v1::RemovePackRequest>,
    ) -> Result<Response<v1::RemovePackResponse>, Status> {
        let actor = operator(&request)?;
        self.hive
            .remove_pack(&actor, &request.into_inner().name)
            .await?;
        Ok(Response::new(v1::RemovePackResponse {}))
    }

    async fn run_action(
        &self,
        request: Request<v1::RunActionRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let actor = operator(&request)?;
        let spec = rpc::job_spec_from_run_action(request.into_inner())?;
        let submitted = self.hive.submit(&actor, spec).await?;
        Ok(Response::new(rpc::job_to_wire(
            &submitted.job,
            &submitted.offline_drones,
        )))
    }

    async fn list_actions(
        &self,
        request: Request<v1::ListActionsRequest>,
    ) -> Result<Response<v1::ListActionsResponse>, Status> {
        let request = request.into_inner();
        let actions = self.hive.list_actions(rpc::optional(&request.pack)).await?;
        Ok(Response::new(v1::ListActionsResponse {
            actions: actions
                .iter()
                .map(rpc::action_info)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn get_action(
        &self,
        request: Request<v1::GetActionRequest>,
    ) -> Result<Response<v1::ActionInfo>, Status> {
        let action = self
            .hive
            .get_action(&request.into_inner().reference)
            .await?;
        Ok(Response::new(rpc::action_info(&action)?))
    }

    async fn shorten_ids(
        &self,
        request: Request<v1::ShortenIdsRequest>,
    ) -> Result<Response<v1::ShortenIdsResponse>, Status> {
        let request = request.into_inner();
        let kind = rpc::id_kind(request.kind)?;
        let short_ids = self.hive.short_ids(kind, &request.ids).await?;
        Ok(Response::new(v1::ShortenIdsResponse { short_ids }))
    }

    async fn fire_event(
        &self,
        request: Request<v1::FireEventRequest>,
    ) -> Result<Response<v1::EventInfo>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        let payload = rpc::event_payload(&request.payload_json)?;
        let event = self
            .hive
            .fire_event(&actor, &request.trigger, payload)
            .await?;
        Ok(Response::new(rpc::event_info(&event)))
    }

    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        let filter = rpc::event_filter(request.into_inner());
        let events = self.hive.list_events(&filter).await?;
        Ok(Response::new(v1::ListEventsResponse {
            events: events.iter().map(rpc::event_info).collect(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<v1::GetEventRequest>,
    ) -> Result<Response<v1::EventInfo>, Status> {
        let id = self.hive.resolve_event_id(&request.into_inner().id).await?;
        let event = self.hive.get_event(&id).await?;
        Ok(Response::new(rpc::event_info(&event)))
    }

    async fn list_rules(
        &self,
        request: Request<v1::ListRulesRequest>,
    ) -> Result<Response<v1::ListRulesResponse>, Status> {
        let trigger = request.into_inner().trigger;
        let trigger = Some(trigger.as_str()).filter(|t| !t.is_empty());
        let rules = self.hive.list_rules(trigger).await?;
        Ok(Response::new(v1::ListRulesResponse {
            rules: rules.iter().map(rpc::rule_info).collect::<Result<_, _>>()?,
        }))
    }

    async fn get_rule(
        &self,
        request: Request<v1::GetRuleRequest>,
    ) -> Result<Response<v1::RuleInfo>, Status> {
        let rule = self.hive.get_rule(&request.into_inner().name).await?;
        Ok(Response::new(rpc::rule_info(&rule)?))
    }

    async fn set_rule_enabled(
        &self,
        request: Request<v1::SetRuleEnabledRequest>,
    ) -> Result<Response<v1::RuleInfo>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        let rule = self
            .hive
            .set_rule_enabled(&actor, &request.name, request.enabled)
            .await?;
        Ok(Response::new(rpc::rule_info(&rule)?))
    }

    async fn test_rules(
        &self,
        request: Request<v1::TestRulesRequest>,
    ) -> Result<Response<v1::TestRulesResponse>, Status> {
        let request = request.into_inner();
        let payload = rpc::test_event(&request.payload_json)?;
        let rule = Some(request.rule.as_str()).filter(|r| !r.is_empty());
        let plans = self
            .hive
            .test_rules(&request.trigger, rule, &payload)
            .await?;
        Ok(Response::new(v1::TestRulesResponse {
            results: plans.into_iter().map(rpc::rule_test).collect(),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let filter = rpc::audit_filter(request.into_inner())?;
        let records = self.hive.list_audit(&filter).await?;
        Ok(Response::new(v1::ListAuditResponse {
            entries: records.into_iter().map(rpc::audit_entry).collect(),
        }))
    }

    async fn get_status(
        &self,
        _request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::HiveStatus>, Status> {
        let status = self.hive.status(chrono::Utc::now()).await;
        Ok(Response::new(rpc::hive_status_to_wire(status)))
    }

    async fn set_secret(
        &self,
        request: Request<v1::SetSecretRequest>,
    ) -> Result<Response<v1::SecretInfo>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        let value = secrecy::SecretString::from(request.value);
        let info = self.hive.set_secret(&actor, &request.name, value).await?;
        Ok(Response::new(rpc::secret_info_to_wire(info)))
    }

    async fn list_secrets(
        &self,
        _request: Request<v1::ListSecretsRequest>,
    ) -> Result<Response<v1::ListSecretsResponse>, Status> {
        let secrets = self.hive.list_secrets().await?;
        Ok(Response::new(v1::ListSecretsResponse {
            secrets: secrets.into_iter().map(rpc::secret_info_to_wire).collect(),
        }))
    }

    async fn get_secret(
        &self,
        request: Request<v1::GetSecretRequest>,
    ) -> Result<Response<v1::GetSecretResponse>, Status> {
        let actor = operator(&request)?;
        let name = request.into_inner().name;
        let (info, value) = self.hive.reveal_secret(&actor, &name).await?;
        Ok(Response::new(v1::GetSecretResponse {
            secret: Some(rpc::secret_info_to_wire(info)),
            value: secrecy::ExposeSecret::expose_secret(&value).to_string(),
        }))
    }

    async fn delete_secret(
        &self,
        request: Request<v1::DeleteSecretRequest>,
    ) -> Result<Response<v1::DeleteSecretResponse>, Status> {
        let actor = operator(&request)?;
        let name = request.into_inner().name;
        self.hive.delete_secret(&actor, &name).await?;
        Ok(Response::new(v1::DeleteSecretResponse {}))
    }

    async fn list_probes(
        &self,
        request: Request<v1::ListProbesRequest>,
    ) -> Result<Response<v1::ListProbesResponse>, Status> {
        let request = request.into_inner();
        let state = match request.state.as_str() {
            "" => None,
            text => Some(
                text.parse()
                    .map_err(|e: UnknownCheckState| HiveError::invalid_argument(e.to_string()))?,
            ),
        };
        let probe = (!request.probe.is_empty()).then_some(request.probe.as_str());
        let states = self.hive.list_probes(probe, state).await?;
        Ok(Response::new(v1::ListProbesResponse {
            targets: states.into_iter().map(rpc::probe_state_to_wire).collect(),
        }))
    }

    async fn create_operator(
        &self,
        request: Request<v1::CreateOperatorRequest>,
    ) -> Result<Response<v1::CreateOperatorResponse>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        let validity = rpc::operator_validity(&request);
        let issued = self
            .hive
            .create_operator(
                &actor,
                &request.name,
                &request.role,
                &request.csr_der,
                validity,
            )
            .await?;
        Ok(Response::new(v1::CreateOperatorResponse {
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: issued.ca_certificate_pem,
            fingerprint: issued.certificate.fingerprint,
            not_after_ms: rpc::ms(issued.certificate.not_after),
        }))
    }

    async fn list_operators(
        &self,
        _request: Request<v1::ListOperatorsRequest>,
    ) -> Result<Response<v1::ListOperatorsResponse>, Status> {
        let records = self.hive.list_operators().await?;
        Ok(Response::new(v1::ListOperatorsResponse {
            certificates: records
                .into_iter()
                .map(|r| rpc::operator_certificate_to_wire(r.certificate, r.revoked))
                .collect(),
        }))
    }

    async fn revoke_operator(
        &self,
        request: Request<v1::RevokeOperatorRequest>,
    ) -> Result<Response<v1::RevokeOperatorResponse>, Status> {
        let actor = operator(&request)?;
        let request = request.into_inner();
        let revoked = self
            .hive
            .revoke_operator(&actor, &request.name, &request.reason)
            .await?;
        Ok(Response::new(v1::RevokeOperatorResponse {
            revoked: revoked
                .into_iter()
                .map(|c| rpc::operator_certificate_to_wire(c, None))
                .collect(),
        }))
    }

    async fn list_checks(
        &self,
        request: Request<v1::ListChecksRequest>,
    ) -> Result<Response<v1::ListChecksResponse>, Status> {
        let (target, state) = rpc::list_checks_request(request.into_inner())?;
        let checks = self.hive.list_checks(target.as_deref(), state).await?;
        Ok(Response::new(v1::ListChecksResponse {
            checks: checks.into_iter().map(rpc::drone_check_to_wire).collect(),
        }))
    }

    async fn add_source(
        &self,
        request: Request<v1::AddSourceRequest>,
    ) -> Result<Response<v1::SourceInfo>, Status> {
        let actor = operator(&request)?;
        let (name, spec, interval) = rpc::source_from_wire(request.into_inner())?;
        let source = self.hive.add_source(&actor, &name, spec, interval).await?;
        Ok(Response::new(rpc::source_to_wire(source)))
    }

    async fn list_sources(
        &self,
        _request: Request<v1::ListSourcesRequest>,
    ) -> Result<Response<v1::ListSourcesResponse>, Status> {
        let sources = self.hive.list_sources().await?;
        Ok(Response::new(v1::ListSourcesResponse {
            sources: sources.into_iter().map(rpc::source_to_wire).collect(),
        }))
    }

    async fn remove_source(
        &self,
        request: Request<v1::RemoveSourceRequest>,
    ) -> Result<Response<v1::RemoveSourceResponse>, Status> {
        let actor = operator(&request)?;
        let name = request.into_inner().name;
        self.hive.remove_source(&actor, &name).await?;
        Ok(Response::new(v1::RemoveSourceResponse {}))
    }

    async fn fleet_summary(
        &self,
        request: Request<v1::FleetSummaryRequest>,
    ) -> Result<Response<v1::FleetSummaryResponse>, Status> {
        let request = request.into_inner();
        let history = request.history;
        let query = rpc::instance_query(request)?;
        let page = self.hive.fleet_instances(&query).await?;
        Ok(Response::new(v1::FleetSummaryResponse {
            total: u32::try_from(page.total).unwrap_or(u32::MAX),
            instances: page
                .instances
                .into_iter()
                .map(|instance| rpc::instance_to_wire(instance, history))
                .collect(),
        }))
    }

    async fn fleet_services(
        &self,
        request: Request<v1::FleetServicesRequest>,
    ) -> Result<Response<v1::FleetServicesResponse>, Status> {
        let request = request.into_inner();
        let services = self
            .hive
            .fleet_services(
                rpc::non_empty(request.source),
                rpc::non_empty(request.service),
            )
            .await?;
        Ok(Response::new(v1::FleetServicesResponse {
            services: services.into_iter().map(rpc::service_to_wire).collect(),
        }))
    }

    async fn fleet_health(
        &self,
        request: Request<v1::FleetHealthRequest>,
    ) -> Result<Response<v1::FleetHealthResponse>, Status> {
        let min_healthy = request.into_inner().min_healthy as usize;
        let health = self.hive.fleet_health(min_healthy).await?;
        Ok(Response::new(v1::FleetHealthResponse {
            services: health
                .services
                .into_iter()
                .map(rpc::service_to_wire)
                .collect(),
            flagged: health.flagged,
        }))
    }
}
