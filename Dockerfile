# batchgen image: the CLI (workers, the autoscaler, producers) on Node 20.
# Build: docker build -t batchgen:latest .   (docker-compose.yml and deploy/k8s use this name)
FROM node:20-bookworm-slim
WORKDIR /app
# oneDNN and a toolchain for the native matmul kernels (npm ci builds them; node-gyp needs python3 and make)
RUN apt-get update && apt-get install -y --no-install-recommends libdnnl-dev g++ make python3 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY test ./test
COPY bench ./bench
COPY native ./native
# npm ci runs `prepare` (tsc) once the sources are in place; optional GPU packages are skipped if they cannot install
RUN npm ci --no-audit --no-fund && npm prune --omit=dev
ENV NODE_ENV=production
ENTRYPOINT ["node", "/app/bin/batchgen.js"]
CMD ["--help"]
