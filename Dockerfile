# agent-sts production image: Node 20, compiled TypeScript, no dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 may need a toolchain when no prebuilt binary matches.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY . .
RUN npm rebuild better-sqlite3 && npm run generate && npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
COPY --from=build /app/prisma ./prisma
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/examples ./examples
USER node
EXPOSE 8787
# Configuration: mount /etc/agent-sts/agent-sts.yaml; set DATABASE_URL and AGENT_STS_KEK (or AGENT_STS_KEK_FILE).
ENV AGENT_STS_CONFIG=/etc/agent-sts/agent-sts.yaml HOST=0.0.0.0 PORT=8787
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+process.env.PORT+'/readyz').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"
ENTRYPOINT ["node", "bin/agent-sts.js"]
CMD ["serve"]
