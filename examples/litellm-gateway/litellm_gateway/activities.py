"""The one activity this playbook brings: read the proxy's model_list and check each upstream."""

from __future__ import annotations

import re

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from activities.kube.api import on_call_errors
from litellm_gateway.models import GatewayRoutes, RoutesQuery, Upstream

# http://SERVICE.NAMESPACE.svc.cluster.local[:port]/..., as LiteLLM's api_base names an in-cluster model
_SERVICE_URL = re.compile(r"^https?://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?(?::\d+)?(?:/|$)")


class LiteLLMGateway:
    """Reads through the Kubernetes API (get configmaps, get services in the upstreams' namespaces)."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api_client)

    @activity.defn(name="litellm_gateway_routes")
    def gateway_routes(self, query: RoutesQuery) -> GatewayRoutes:
        """Each model's api_base, and whether the Service it names exists (404: no; other errors fail
        the activity with the API server's words, 403 included)."""
        with on_call_errors(f"read ConfigMap {query.namespace}/{query.configmap}"):
            try:
                cm = self.core.read_namespaced_config_map(query.configmap, query.namespace)
            except ApiException as err:
                if err.status != 404:
                    raise
                return GatewayRoutes(found=False, why=f"ConfigMap {query.namespace}/{query.configmap} not found")
        text = (cm.data or {}).get("config.yaml")
        if not text:
            return GatewayRoutes(found=False, why=f"ConfigMap {query.namespace}/{query.configmap} has no config.yaml")
        try:
            config = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            return GatewayRoutes(found=False, why=f"config.yaml does not parse: {err}")
        upstreams = []
        for entry in config.get("model_list") or []:
            api_base = str(((entry or {}).get("litellm_params") or {}).get("api_base") or "")
            upstream = Upstream(model=str((entry or {}).get("model_name")), api_base=api_base)
            match = _SERVICE_URL.match(api_base)
            if match:
                upstream.service, upstream.namespace = match.group(1), match.group(2)
                upstream.exists = self._service_exists(upstream.namespace, upstream.service)
            upstreams.append(upstream)
        return GatewayRoutes(found=True, upstreams=upstreams)

    def _service_exists(self, namespace: str, name: str) -> bool:
        with on_call_errors(f"read Service {namespace}/{name}"):
            try:
                self.core.read_namespaced_service(name, namespace)
            except ApiException as err:
                if err.status == 404:
                    return False
                raise
        return True
