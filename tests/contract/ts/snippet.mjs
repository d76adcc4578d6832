// The README's Assistants snippet in JavaScript, with the official `openai` npm package.
//
//   OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 OPENAI_API_KEY=local node snippet.mjs sales.csv
//
// Prints one JSON object (the run, the messages, the image check) on stdout for the pytest
// test `test_typescript_snippet` to assert on. Any failure exits non-zero with the error.
import fs from "node:fs";
import OpenAI from "openai";
import { VERSION } from "openai/version";

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

async function main() {
  const csvPath = process.argv[2];
  if (!csvPath) throw new Error("usage: node snippet.mjs <file.csv>");
  const client = new OpenAI({ maxRetries: 0 }); // OPENAI_BASE_URL and OPENAI_API_KEY from env

  const assistant = await client.beta.assistants.create({
    name: "Data Analyst",
    instructions: "You analyze uploaded data files. Use Python to compute results.",
    model: "gpt-5.4",
    tools: [{ type: "code_interpreter" }],
  });
  const thread = await client.beta.threads.create();
  const file = await client.files.create({
    file: fs.createReadStream(csvPath),
    purpose: "assistants",
  });
  await client.beta.threads.messages.create(thread.id, {
    role: "user",
    content: "What's the month-over-month growth rate in this file? Plot it.",
    attachments: [{ file_id: file.id, tools: [{ type: "code_interpreter" }] }],
  });
  const run = await client.beta.threads.runs.createAndPoll(thread.id, {
    assistant_id: assistant.id,
  });

  const messages = await client.beta.threads.messages.list(thread.id);
  const texts = [];
  const images = [];
  for (const message of messages.data) {
    for (const part of message.content) {
      if (part.type === "text" && message.role === "assistant") {
        texts.push(part.text.value);
      } else if (part.type === "image_file") {
        const response = await client.files.content(part.image_file.file_id);
        const bytes = new Uint8Array(await response.arrayBuffer());
        images.push({
          file_id: part.image_file.file_id,
          size: bytes.length,
          png: PNG_MAGIC.every((byte, i) => bytes[i] === byte),
        });
      }
    }
  }

  const summary = {
    sdk_version: VERSION,
    assistant_id: assistant.id,
    thread_id: thread.id,
    file: { id: file.id, filename: file.filename, bytes: file.bytes, purpose: file.purpose },
    run: {
      id: run.id,
      status: run.status,
      last_error: run.last_error,
      total_tokens: run.usage ? run.usage.total_tokens : null,
    },
    roles: messages.data.map((m) => m.role),
    texts,
    images,
  };
  process.stdout.write(JSON.stringify(summary) + "\n");
}

main().catch((error) => {
  process.stderr.write(`snippet.mjs failed: ${error?.stack ?? error}\n`);
  process.exit(1);
});
