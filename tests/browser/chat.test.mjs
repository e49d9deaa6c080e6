// Two users in two browser contexts chat in one room.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, open, waitForCount, assertNoProblems, shot, unique, TEST_TIMEOUT } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

async function join(page, user, room) {
  await open(page, '/chat');
  await page.getByTestId('chat-username').fill(user);
  await page.getByTestId('chat-room').fill(room);
  await page.getByTestId('chat-join').click();
  await page.getByTestId('chat-view').waitFor();
  // connected and joined: our own presence arrives after the join ack
  await page.locator('[data-testid="conn-state"][data-state="open"]').waitFor();
  await page.locator(`[data-testid="chat-event"][data-event="join"][data-user="${user}"]`).waitFor();
}

test('alice and bob see each other join, count 2, and each other\'s messages', { timeout: TEST_TIMEOUT }, async () => {
  const room = unique('room');
  const alice = await newPage(browser);
  const bob = await newPage(browser);

  await join(alice, 'alice', room);
  await waitForCount(alice, '[data-testid="chat-count"]', 1);
  await join(bob, 'bob', room);

  // the join notice, the count and the member list, on both sides
  await alice.locator('[data-testid="chat-event"][data-event="join"][data-user="bob"]').waitFor();
  for (const page of [alice, bob]) {
    assert.equal(await waitForCount(page, '[data-testid="chat-count"]', 2), 2);
    await page.locator('[data-testid="chat-member"][data-user="alice"]').waitFor();
    await page.locator('[data-testid="chat-member"][data-user="bob"]').waitFor();
  }
  assert.equal(await alice.getByTestId('chat-member').count(), 2);

  // messages both ways, with the sender's name
  await alice.getByTestId('chat-input').fill('hello from alice');
  await alice.getByTestId('chat-send').click();
  await bob.locator('[data-testid="chat-message"][data-from="alice"]', { hasText: 'hello from alice' }).waitFor();
  await bob.getByTestId('chat-input').fill('hi alice, bob here');
  await bob.getByTestId('chat-input').press('Enter');
  await alice.locator('[data-testid="chat-message"][data-from="bob"]', { hasText: 'hi alice, bob here' }).waitFor();
  // each also sees its own message (delivered back by the server)
  await alice.locator('[data-testid="chat-message"][data-from="alice"]', { hasText: 'hello from alice' }).waitFor();
  assert.equal(await bob.locator('[data-testid="chat-message"][data-from="alice"] .from').first().textContent(), 'alice');
  await shot(alice, 'chat');

  // bob leaves: alice sees the notice and the count drop
  await bob.getByTestId('chat-leave').click();
  await alice.locator('[data-testid="chat-event"][data-event="leave"][data-user="bob"]').waitFor();
  await alice.locator('[data-testid="chat-count"][data-count="1"]').waitFor();

  assertNoProblems(alice);
  assertNoProblems(bob);
  await alice.context().close();
  await bob.context().close();
});
