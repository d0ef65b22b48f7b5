# docker buildx bake -f deploy/docker-bake.hcl [--push]
variable "REGISTRY" { default = "ghcr.io/eraser" }
variable "TAG" { default = "dev" }
variable "BASE" { default = "python:3.11-slim-bookworm" }

group "default" { targets = ["eraser"] }

target "eraser" {
  context    = "."
  dockerfile = "deploy/Dockerfile"
  args       = { BASE = "${BASE}" }
  platforms  = ["linux/amd64", "linux/arm64"]
  tags       = ["${REGISTRY}/eraser:${TAG}"]
}
