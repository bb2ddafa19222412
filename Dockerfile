# caucus server image, FROM scratch: this environment has no image registry, so there is no
# golang base image for a multi-stage build. Build the static binary on the host first:
#
#   CGO_ENABLED=0 GOOS=linux go build -trimpath -o bin/caucus ./cmd/caucus
#   docker build -t caucus:dev .
#
# The image holds only the binary. Configuration comes from CAUCUS_* environment variables
# (every `caucus server` flag has one: CAUCUS_ + flag name upper-cased, - as _), see
# deploy/docker-compose.3.yml. Data lives in /data, which should be a volume so that a member
# killed and restarted (docker kill; docker start) comes back with its state.
FROM scratch
COPY bin/caucus /caucus
# WORKDIR creates /data in the image (scratch has no mkdir), so the default works without a
# volume too.
WORKDIR /data
ENV CAUCUS_DATA_DIR=/data \
    CAUCUS_LISTEN_CLIENT_URLS=http://0.0.0.0:2379 \
    CAUCUS_LISTEN_PEER_URLS=http://0.0.0.0:2380
EXPOSE 2379 2380
VOLUME ["/data"]
ENTRYPOINT ["/caucus"]
CMD ["server"]
